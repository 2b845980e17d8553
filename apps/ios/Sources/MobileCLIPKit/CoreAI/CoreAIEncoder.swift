// Core AI (iOS/macOS 27) encoders for `.aimodel` assets written by `mobileclip-deploy export -f coreai`.
//
// NOT COMPILED HERE: this file is written to Apple's published Core AI Swift API (the `AIModel`,
// `InferenceFunction` and `NDArray` types as used in apple/coreai-models and Apple's documentation)
// and is fenced with `#if canImport(CoreAI)`; Linux and older SDKs skip it. The runtime choice
// (Core AI on iOS 27, Core ML below) is portable and tested on Linux: see EncoderRuntime.swift.
#if canImport(CoreAI)
import CoreAI
import Foundation

/// One exported encoder (`.aimodel` folder) run with Core AI. Names and shapes come from the
/// manifest entry; the asset's batch-1 entrypoint is `main` (further batch sizes are `main_b<N>`).
@available(iOS 27.0, macOS 27.0, *)
public final class CoreAIEncoder: @unchecked Sendable {
    public let url: URL
    public let artifact: ExportManifest.Artifact
    public let options: SpecializationOptions
    private var function: InferenceFunction?

    public init(exportFolder: URL, artifact: ExportManifest.Artifact, options: SpecializationOptions = .default) {
        self.url = exportFolder.appendingPathComponent(artifact.file)
        self.artifact = artifact
        self.options = options
    }

    public var isLoaded: Bool { function != nil }

    /// Loads the asset; the first load specializes it for this device (seconds on the Neural Engine).
    public func load() async throws {
        guard function == nil else { return }
        let model = try await AIModel(contentsOf: url, options: options)
        guard let main = try model.loadFunction(named: "main") else {
            throw MobileCLIPError.invalidData("\(artifact.file) has no \"main\" function (\(model.functionNames))")
        }
        function = main
    }

    public func unload() { function = nil }

    public func encode(image: ImageTensor) async throws -> [Float] {
        guard let spec = artifact.inputs.first, spec.shape == image.shape else {
            throw MobileCLIPError.invalidData("\(artifact.file) takes \(artifact.inputs.first?.shape ?? []), got \(image.shape)")
        }
        var input = NDArray(shape: spec.shape, scalarType: .float32)
        var view = input.mutableView(as: Float32.self)
        view.withUnsafeMutablePointer { pointer, _, _ in
            image.values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: $0.count) }
        }
        return try await run(input, name: spec.name)
    }

    public func encode(tokens: [Int32]) async throws -> [Float] {
        guard let spec = artifact.inputs.first, spec.shape.reduce(1, *) == tokens.count else {
            throw MobileCLIPError.invalidData("\(artifact.file) takes \(artifact.inputs.first?.shape ?? []) tokens, got \(tokens.count)")
        }
        var input = NDArray(shape: spec.shape, scalarType: .int32)  // Core AI has no 64-bit integers
        var view = input.mutableView(as: Int32.self)
        view.withUnsafeMutablePointer { pointer, _, _ in
            tokens.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: $0.count) }
        }
        return try await run(input, name: spec.name)
    }

    /// One inference on zeros of the input's shape (benchmarks and pre-warming).
    public func runDummyInference() async throws {
        guard let spec = artifact.inputs.first else { return }
        let count = spec.shape.reduce(1, *)
        if artifact.isText {
            _ = try await encode(tokens: [Int32](repeating: 0, count: count))
        } else {
            _ = try await encode(image: ImageTensor(width: spec.shape[3], height: spec.shape[2],
                                                     values: [Float](repeating: 0, count: count)))
        }
    }

    private func run(_ input: NDArray, name: String) async throws -> [Float] {
        try await load()
        guard let function, let output = artifact.outputs.first?.name else {
            throw MobileCLIPError.invalidData("\(artifact.file): not loaded or no output in the manifest")
        }
        var outputs = try await function.run(inputs: [name: input])
        guard let array = outputs.remove(output)?.ndArray else {
            throw MobileCLIPError.invalidData("\(artifact.file) returned no \(output)")
        }
        let count = artifact.outputs.first?.shape.reduce(1, *) ?? 0
        return array.view(as: Float32.self).withUnsafePointer { pointer, _, _ in
            Array(UnsafeBufferPointer(start: pointer, count: count))
        }
    }
}

/// Times an export's Core AI encoders and returns one record per encoder, with runtime `coreai`.
@available(iOS 27.0, macOS 27.0, *)
public enum CoreAIBenchmark {
    public static func run(_ options: BenchOptions) async throws -> [BenchRecord] {
        let manifest = try ExportManifest.load(from: options.export.appendingPathComponent("manifest.json"))
        let artifacts = manifest.artifacts(runtime: .coreAI).filter { options.tower.includes($0.tower) }
        guard !artifacts.isEmpty else {
            throw MobileCLIPError.missingFile("no Core AI \(options.tower.rawValue) encoder in \(options.export.path)")
        }
        var records: [BenchRecord] = []
        for artifact in artifacts {
            let encoder = CoreAIEncoder(exportFolder: options.export, artifact: artifact)
            let clock = ContinuousClock()
            func ms(_ d: Duration) -> Double { Double(d.components.attoseconds) / 1e15 + Double(d.components.seconds) * 1e3 }
            let load = try await clock.measure { try await encoder.load() }
            let first = try await clock.measure { try await encoder.runDummyInference() }
            for _ in 0..<options.warmup { try await encoder.runDummyInference() }
            var warm: [Double] = []
            for _ in 0..<options.iterations {
                warm.append(ms(try await clock.measure { try await encoder.runDummyInference() }))
            }
            encoder.unload()
            records.append(try BenchRecord(
                device: DeviceInfo.current(),
                runtime: BenchRecord.Runtime(name: EncoderRuntime.coreAI.rawValue, version: DeviceInfo.osVersion()),
                computeUnits: "default",
                artifact: BenchRecord.ArtifactInfo(artifact),
                warmup: options.warmup,
                timings: EncoderTimings(loadMs: ms(load), firstInferenceMs: ms(first), warmMs: warm),
                peakMemoryMb: DeviceInfo.peakMemoryMegabytes()
            ))
        }
        return records
    }
}
#endif
