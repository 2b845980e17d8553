#if canImport(CoreML)
import CoreML
import Foundation

extension ComputeUnits {
    public var mlComputeUnits: MLComputeUnits {
        switch self {
        case .cpuOnly: return .cpuOnly
        case .cpuAndGPU: return .cpuAndGPU
        case .cpuAndNeuralEngine: return .cpuAndNeuralEngine
        case .all: return .all
        }
    }
}

/// One exported encoder (`.mlpackage` or `.mlmodelc`) run with Core ML.
///
/// Input and output names and shapes come from the manifest entry, so the same type serves every
/// model, tower and scheme.
public final class CoreMLEncoder: ModelLoading, ImageEncoding, TextEncoding, @unchecked Sendable {
    public let url: URL
    public let artifact: ExportManifest.Artifact
    public let computeUnits: ComputeUnits

    private var model: MLModel?
    private let lock = NSLock()

    /// `computeUnits` nil picks `ComputeUnits.recommended(for:)`.
    public init(url: URL, artifact: ExportManifest.Artifact, computeUnits: ComputeUnits? = nil) {
        self.url = url
        self.artifact = artifact
        self.computeUnits = computeUnits ?? .recommended(for: artifact)
    }

    /// The encoder for `artifact` inside an export folder.
    public convenience init(exportFolder: URL, artifact: ExportManifest.Artifact, computeUnits: ComputeUnits? = nil) {
        self.init(url: exportFolder.appendingPathComponent(artifact.file), artifact: artifact, computeUnits: computeUnits)
    }

    public var isLoaded: Bool {
        lock.lock()
        defer { lock.unlock() }
        return model != nil
    }

    public func load() throws {
        lock.lock()
        defer { lock.unlock() }
        guard model == nil else { return }
        let configuration = MLModelConfiguration()
        configuration.computeUnits = computeUnits.mlComputeUnits
        model = try MLModel(contentsOf: try Self.compiledModelURL(for: url, sha256: artifact.sha256),
                            configuration: configuration)
    }

    public func unload() {
        lock.lock()
        model = nil
        lock.unlock()
    }

    /// Loads and runs one inference on a zero input: the first prediction triggers Core ML's
    /// per-device specialization, which can take seconds on the Neural Engine.
    public func prewarm() throws {
        try load()
        _ = try predict(try makeInput(zerosFor: inputSpec))
    }

    public func encode(image: ImageTensor) throws -> [Float] {
        guard inputSpec.shape == image.shape else {
            throw MobileCLIPError.invalidData("\(artifact.file) takes \(inputSpec.shape), got \(image.shape)")
        }
        return try predict(try makeInput(image.values, spec: inputSpec))
    }

    public func encode(tokens: [Int32]) throws -> [Float] {
        let expected = inputSpec.shape.reduce(1, *)
        guard tokens.count == expected else {
            throw MobileCLIPError.invalidData("\(artifact.file) takes \(expected) tokens, got \(tokens.count)")
        }
        return try predict(try makeInput(tokens.map(Float.init), spec: inputSpec))
    }

    /// Runs one inference with the right dummy input for this tower (for benchmarks).
    public func runDummyInference() throws {
        _ = try predict(try makeInput(zerosFor: inputSpec))
    }

    // MARK: - Inference

    private var inputSpec: ExportManifest.TensorSpec {
        artifact.inputs[0]
    }

    private func predict(_ input: MLMultiArray) throws -> [Float] {
        lock.lock()
        let model = self.model
        lock.unlock()
        guard let model else {
            throw MobileCLIPError.unsupported("\(artifact.file) is not loaded; call load() first")
        }
        let features = try MLDictionaryFeatureProvider(
            dictionary: [inputSpec.name: MLFeatureValue(multiArray: input)])
        let result = try model.prediction(from: features)
        let outputName = artifact.outputs.first?.name ?? result.featureNames.sorted()[0]
        guard let output = result.featureValue(for: outputName)?.multiArrayValue else {
            throw MobileCLIPError.invalidData("\(artifact.file) has no multi-array output \(outputName)")
        }
        return (0..<output.count).map { output[$0].floatValue }
    }

    private func makeInput(zerosFor spec: ExportManifest.TensorSpec) throws -> MLMultiArray {
        try makeInput([Float](repeating: 0, count: spec.shape.reduce(1, *)), spec: spec)
    }

    private func makeInput(_ values: [Float], spec: ExportManifest.TensorSpec) throws -> MLMultiArray {
        let shape = spec.shape.map { NSNumber(value: $0) }
        switch spec.dtype {
        case "float32":
            let array = try MLMultiArray(shape: shape, dataType: .float32)
            let pointer = array.dataPointer.bindMemory(to: Float.self, capacity: values.count)
            for i in values.indices { pointer[i] = values[i] }
            return array
        case "int32":
            let array = try MLMultiArray(shape: shape, dataType: .int32)
            let pointer = array.dataPointer.bindMemory(to: Int32.self, capacity: values.count)
            for i in values.indices { pointer[i] = Int32(values[i]) }
            return array
        default:
            throw MobileCLIPError.unsupported("input dtype \(spec.dtype) of \(artifact.file)")
        }
    }

    // MARK: - Compilation cache

    /// `.mlmodelc` folders load directly; `.mlpackage`/`.mlmodel` files are compiled once and
    /// the result kept in Caches, keyed by file name and checksum so a new export recompiles.
    static func compiledModelURL(for url: URL, sha256: String?) throws -> URL {
        if url.pathExtension == "mlmodelc" { return url }
        let fm = FileManager.default
        let caches = try fm.url(for: .cachesDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
            .appendingPathComponent("MobileCLIPKit", isDirectory: true)
        try fm.createDirectory(at: caches, withIntermediateDirectories: true)
        let key = String((sha256 ?? "unversioned").prefix(16))
        let cached = caches.appendingPathComponent("\(url.deletingPathExtension().lastPathComponent)-\(key).mlmodelc")
        if sha256 != nil, fm.fileExists(atPath: cached.path) { return cached }
        let compiled = try MLModel.compileModel(at: url)
        if fm.fileExists(atPath: cached.path) { try fm.removeItem(at: cached) }
        try fm.moveItem(at: compiled, to: cached)
        return cached
    }
}
#endif
