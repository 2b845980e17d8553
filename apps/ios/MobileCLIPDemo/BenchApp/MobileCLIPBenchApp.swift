import Foundation
import MobileCLIPKit
import SwiftUI

/// Headless benchmark app for iPhones, driven by `mobileclip-deploy bench --target ios`: it is
/// launched through `xcrun devicectl ... process launch --console` with `mobileclip-bench`'s
/// arguments (paths relative to the app container), appends the records, prints them and exits.
@main
struct MobileCLIPBenchApp: App {
    @StateObject private var runner = BenchRunner()

    var body: some Scene {
        WindowGroup {
            Text(runner.status)
                .font(.callout.monospaced())
                .padding()
                .task { runner.start() }
        }
    }
}

@MainActor
final class BenchRunner: ObservableObject {
    @Published private(set) var status = "Launch me with mobileclip-deploy bench --target ios."

    func start() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        guard arguments.contains("--export") else { return }
        let container = URL(fileURLWithPath: NSHomeDirectory(), isDirectory: true)
        let options: BenchOptions
        do {
            options = try BenchOptions.parse(arguments, relativeTo: container)
        } catch {
            finish("mobileclip-bench: \(error)", code: 2)
            return
        }
        status = "Benchmarking \(options.export.lastPathComponent)…"
        Task.detached(priority: .userInitiated) {
            do {
                var lines: [String] = []
                for record in try CoreMLBenchmark.run(options) {
                    try record.append(to: options.output)
                    lines.append(try record.jsonLine())
                }
                await self.finish(lines.joined(separator: "\n"), code: 0)
            } catch {
                await self.finish("mobileclip-bench: \(error)", code: 1)
            }
        }
    }

    private func finish(_ message: String, code: Int32) {
        status = message
        print(message)
        fflush(stdout)
        exit(code)
    }
}
