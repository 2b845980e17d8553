import Foundation

/// One benchmark result, one JSON object per line in a `.jsonl` file.
///
/// The keys are a contract with the Python harness (`mobileclip-deploy bench`), which reads
/// records from phones and desktops alike; absent values are written as `null`, never omitted.
public struct BenchRecord: Codable, Equatable, Sendable {
    public static let schemaID = "mobileclip-deploy/bench-record/v1"

    public struct Device: Codable, Equatable, Sendable {
        public var model: String
        public var os: String
        public var soc: String?
        public var name: String

        public init(model: String, os: String, soc: String?, name: String) {
            self.model = model
            self.os = os
            self.soc = soc
            self.name = name
        }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(model, forKey: .model)
            try c.encode(os, forKey: .os)
            try c.encode(soc, forKey: .soc)
            try c.encode(name, forKey: .name)
        }
    }

    public struct Runtime: Codable, Equatable, Sendable {
        public var name: String
        public var version: String

        public init(name: String, version: String) {
            self.name = name
            self.version = version
        }
    }

    public struct ArtifactInfo: Codable, Equatable, Sendable {
        public var file: String
        public var sha256: String?
        public var model: String
        public var tower: String
        public var backend: String
        public var scheme: String

        public init(file: String, sha256: String?, model: String, tower: String, backend: String, scheme: String) {
            self.file = file
            self.sha256 = sha256
            self.model = model
            self.tower = tower
            self.backend = backend
            self.scheme = scheme
        }

        public init(_ artifact: ExportManifest.Artifact) {
            self.init(file: artifact.file, sha256: artifact.sha256, model: artifact.model,
                      tower: artifact.tower, backend: artifact.backend, scheme: artifact.scheme)
        }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(file, forKey: .file)
            try c.encode(sha256, forKey: .sha256)
            try c.encode(model, forKey: .model)
            try c.encode(tower, forKey: .tower)
            try c.encode(backend, forKey: .backend)
            try c.encode(scheme, forKey: .scheme)
        }
    }

    public var schema: String = BenchRecord.schemaID
    /// ISO 8601, UTC.
    public var date: String
    public var target: String
    public var device: Device
    public var runtime: Runtime
    public var computeUnits: String
    public var threads: Int?
    public var artifact: ArtifactInfo
    public var batch: Int
    public var warmup: Int
    public var iterations: Int
    public var loadMs: Double
    public var firstInferenceMs: Double
    public var latencyMs: LatencyStatistics
    public var samplesMs: [Double]
    public var peakMemoryMb: Double?

    enum CodingKeys: String, CodingKey {
        case schema, date, target, device, runtime, computeUnits = "compute_units", threads, artifact
        case batch, warmup, iterations, loadMs = "load_ms", firstInferenceMs = "first_inference_ms"
        case latencyMs = "latency_ms", samplesMs = "samples_ms", peakMemoryMb = "peak_memory_mb"
    }

    /// A record from measured timings; `latency_ms` is computed from the warm samples.
    public init(
        date: Date = Date(),
        target: String = "ios",
        device: Device,
        runtime: Runtime,
        computeUnits: String,
        threads: Int? = nil,
        artifact: ArtifactInfo,
        batch: Int = 1,
        warmup: Int,
        timings: EncoderTimings,
        peakMemoryMb: Double?
    ) throws {
        guard let stats = LatencyStatistics(samples: timings.warmMs) else {
            throw MobileCLIPError.invalidData("a bench record needs at least one timed iteration")
        }
        self.date = Self.isoDate(date)
        self.target = target
        self.device = device
        self.runtime = runtime
        self.computeUnits = computeUnits
        self.threads = threads
        self.artifact = artifact
        self.batch = batch
        self.warmup = warmup
        self.iterations = timings.warmMs.count
        self.loadMs = timings.loadMs
        self.firstInferenceMs = timings.firstInferenceMs
        self.latencyMs = stats
        self.samplesMs = timings.warmMs
        self.peakMemoryMb = peakMemoryMb
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(schema, forKey: .schema)
        try c.encode(date, forKey: .date)
        try c.encode(target, forKey: .target)
        try c.encode(device, forKey: .device)
        try c.encode(runtime, forKey: .runtime)
        try c.encode(computeUnits, forKey: .computeUnits)
        try c.encode(threads, forKey: .threads)
        try c.encode(artifact, forKey: .artifact)
        try c.encode(batch, forKey: .batch)
        try c.encode(warmup, forKey: .warmup)
        try c.encode(iterations, forKey: .iterations)
        try c.encode(loadMs, forKey: .loadMs)
        try c.encode(firstInferenceMs, forKey: .firstInferenceMs)
        try c.encode(latencyMs, forKey: .latencyMs)
        try c.encode(samplesMs, forKey: .samplesMs)
        try c.encode(peakMemoryMb, forKey: .peakMemoryMb)
    }

    /// The line `mobileclip-bench` prints for this record; the spread only where it was measured (two or more
    /// timed iterations), never a standard deviation of 0 from a single sample.
    public var summary: String {
        let ms = { (value: Double) in String(format: "%.2f", value) }
        let spread = latencyMs.stdev.map { ", stdev \(ms($0)) ms" } ?? ""
        return "\(artifact.file) [\(runtime.name), \(computeUnits)]: load \(Int(loadMs)) ms, "
            + "first \(ms(firstInferenceMs)) ms, median \(ms(latencyMs.median)) ms, p90 \(ms(latencyMs.p90)) ms"
            + "\(spread) over \(iterations) iteration\(iterations == 1 ? "" : "s")"
    }

    /// One compact JSON line (no trailing newline), keys sorted for stable diffs.
    public func jsonLine() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// Appends this record as one line to a `.jsonl` file, creating it if needed.
    public func append(to url: URL) throws {
        let line = Data((try jsonLine() + "\n").utf8)
        let fm = FileManager.default
        if !fm.fileExists(atPath: url.path) {
            try line.write(to: url)
            return
        }
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: line)
    }

    static func isoDate(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }
}
