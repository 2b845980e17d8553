// Benchmarks an export's Core ML encoders and appends one JSON record per encoder to a .jsonl
// file (schema mobileclip-deploy/bench-record/v1, read by `mobileclip-deploy bench`).
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
do {
    for record in try CoreMLBenchmark.run(options) {
        try record.append(to: options.output)
        let s = record.latencyMs
        print("\(record.artifact.file) [\(record.computeUnits)]: load \(Int(record.loadMs)) ms, "
              + "first \(String(format: "%.2f", record.firstInferenceMs)) ms, "
              + "median \(String(format: "%.2f", s.median)) ms, p90 \(String(format: "%.2f", s.p90)) ms")
    }
    print("appended to \(options.output.path)")
} catch {
    fail("\(error)", code: 1)
}
#else
fail("Core ML needs macOS or iOS; on this platform run `mobileclip-deploy bench` for the "
     + "ONNX/ExecuTorch backends, or run this tool on a Mac (see apps/ios/README.md).", code: 3)
#endif
