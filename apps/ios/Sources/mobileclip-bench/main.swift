// Benchmarks an export's encoders and appends one JSON record per encoder to a .jsonl file
// (schema mobileclip-deploy/bench-record/v1, read by `mobileclip-deploy bench`). On iOS/macOS 27
// an export with Core AI assets runs them with Core AI, else its Core ML programs run; each record's
// `runtime.name` says which ran.
import Foundation
import MobileCLIPKit

func fail(_ message: String, code: Int32 = 2) -> Never {
    FileHandle.standardError.write(Data("mobileclip-bench: \(message)\n".utf8))
    exit(code)
}

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.contains("-h") || arguments.contains("--help") {
    print(BenchOptions.usage)
    exit(0)
}

let options: BenchOptions
do {
    options = try BenchOptions.parse(arguments)
} catch {
    fail("\(error)")
}

#if canImport(CoreML)
func records(_ options: BenchOptions) async throws -> [BenchRecord] {
    #if canImport(CoreAI)
    if #available(iOS 27.0, macOS 27.0, *) {
        let manifest = try ExportManifest.load(from: options.export.appendingPathComponent("manifest.json"))
        if !manifest.artifacts(runtime: .coreAI).isEmpty { return try await CoreAIBenchmark.run(options) }
    }
    #endif
    return try CoreMLBenchmark.run(options)
}

do {
    for record in try await records(options) {
        try record.append(to: options.output)
        print(record.summary)
    }
    print("appended to \(options.output.path)")
} catch {
    fail("\(error)", code: 1)
}
#else
fail("Core ML needs macOS or iOS; on this platform run `mobileclip-deploy bench` for the "
     + "ONNX/ExecuTorch backends, or run this tool on a Mac (see apps/ios/README.md).", code: 3)
#endif
