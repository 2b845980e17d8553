import Foundation

/// Core ML compute units by their Core ML names, so they can be parsed and recorded everywhere.
public enum ComputeUnits: String, CaseIterable, Codable, Sendable {
    case cpuOnly, cpuAndGPU, cpuAndNeuralEngine, all

    /// Default per encoder: the convolutional image tower runs well on the Neural Engine; an fp32
    /// text tower goes to the GPU because the Neural Engine computes in fp16, which can collapse
    /// text embeddings (LayerNorm/softmax overflow).
    public static func recommended(for artifact: ExportManifest.Artifact) -> ComputeUnits {
        artifact.isText && artifact.scheme == "fp32" ? .cpuAndGPU : .cpuAndNeuralEngine
    }
}

/// Which towers `mobileclip-bench` runs.
public enum TowerSelection: String, CaseIterable, Sendable {
    case image, text, both

    public func includes(_ tower: String) -> Bool {
        self == .both || rawValue == tower
    }
}

/// Command line of `mobileclip-bench`.
public struct BenchOptions: Equatable, Sendable {
    public var export: URL
    public var tower: TowerSelection = .both
    public var computeUnits: ComputeUnits = .all
    public var warmup = 10
    public var iterations = 50
    public var output = URL(fileURLWithPath: "results.jsonl")

    public static let usage = """
        usage: mobileclip-bench --export DIR [--tower image|text|both] \
        [--compute-units cpuOnly|cpuAndGPU|cpuAndNeuralEngine|all] [--warmup N] [--iterations N] \
        [--output results.jsonl]
        """

    public init(export: URL) {
        self.export = export
    }

    /// Parses arguments (without the program name); errors say which flag is wrong. Relative
    /// paths resolve against `base` (default: the working directory); the iOS bench app passes its
    /// container, where `mobileclip-deploy bench --target ios` copies exports.
    public static func parse(_ arguments: [String], relativeTo base: URL? = nil) throws -> BenchOptions {
        func path(_ value: String) -> URL {
            guard let base, !value.hasPrefix("/") else { return URL(fileURLWithPath: value) }
            return base.appendingPathComponent(value)
        }
        var export: URL?
        var options = BenchOptions(export: URL(fileURLWithPath: "."))
        var rest = arguments[...]
        while let flag = rest.popFirst() {
            guard let value = rest.popFirst() else {
                throw MobileCLIPError.invalidData("\(flag) needs a value\n\(usage)")
            }
            switch flag {
            case "--export":
                export = path(value)
            case "--tower":
                options.tower = try choice(value, flag: flag)
            case "--compute-units":
                options.computeUnits = try choice(value, flag: flag)
            case "--warmup":
                options.warmup = try count(value, flag: flag, minimum: 0)
            case "--iterations":
                options.iterations = try count(value, flag: flag, minimum: 1)
            case "--output":
                options.output = path(value)
            default:
                throw MobileCLIPError.invalidData("unknown option \(flag)\n\(usage)")
            }
        }
        guard let export else { throw MobileCLIPError.invalidData("--export DIR is required\n\(usage)") }
        options.export = export
        return options
    }

    private static func choice<T: RawRepresentable & CaseIterable>(_ value: String, flag: String) throws -> T
    where T.RawValue == String {
        guard let parsed = T(rawValue: value) else {
            let allowed = T.allCases.map(\.rawValue).joined(separator: "|")
            throw MobileCLIPError.invalidData("\(flag) must be one of \(allowed), got \(value)")
        }
        return parsed
    }

    private static func count(_ value: String, flag: String, minimum: Int) throws -> Int {
        guard let n = Int(value), n >= minimum else {
            throw MobileCLIPError.invalidData("\(flag) must be an integer >= \(minimum), got \(value)")
        }
        return n
    }
}
