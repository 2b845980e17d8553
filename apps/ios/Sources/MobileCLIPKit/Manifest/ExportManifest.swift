import Foundation

/// An export folder's `manifest.json`, written by `mobileclip-deploy export`.
///
/// Only the fields an app needs are required; unknown keys are ignored so newer exporters stay
/// readable.
public struct ExportManifest: Codable, Equatable, Sendable {
    public var formatVersion: Int
    public var model: String
    public var displayName: String?
    public var checkpointSha256: String?
    public var randomWeights: Bool?
    public var embedDim: Int
    /// The multiplier applied to cosine similarities (already `exp(logit_scale)`, e.g. 100).
    public var logitScale: Float
    public var created: String?
    public var toolVersions: [String: String]?
    public var preprocessing: Preprocessing
    public var tokenizer: TokenizerInfo
    public var artifacts: [Artifact]

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version", model, displayName = "display_name"
        case checkpointSha256 = "checkpoint_sha256", randomWeights = "random_weights"
        case embedDim = "embed_dim", logitScale = "logit_scale", created
        case toolVersions = "tool_versions", preprocessing, tokenizer, artifacts
    }

    public struct Preprocessing: Codable, Equatable, Sendable {
        public var imageSize: Int
        public var resize: String?
        public var interpolation: String?
        public var antialias: Bool?
        public var crop: String?
        public var mean: [Float]?
        public var std: [Float]?
        public var pixelRange: [Float]?
        public var layout: String?
        public var color: String?
        /// "inside_model" when mean/std are part of the graph and the input is plain [0, 1] RGB.
        public var normalization: String?

        enum CodingKeys: String, CodingKey {
            case imageSize = "image_size", resize, interpolation, antialias, crop, mean, std
            case pixelRange = "pixel_range", layout, color, normalization
        }
    }

    public struct TokenizerInfo: Codable, Equatable, Sendable {
        /// Paths relative to the export folder.
        public var merges: String
        public var vocab: String?
        public var contextLength: Int?
        public var sotToken: Int?
        public var eotToken: Int?
        public var padToken: Int?
        public var lowercase: Bool?

        enum CodingKeys: String, CodingKey {
            case merges, vocab, contextLength = "context_length", sotToken = "sot_token"
            case eotToken = "eot_token", padToken = "pad_token", lowercase
        }
    }

    public struct TensorSpec: Codable, Equatable, Sendable {
        public var name: String
        public var shape: [Int]
        public var dtype: String
        public var kind: String?
        public var pixelRange: [Float]?
        public var l2Normalized: Bool?

        enum CodingKeys: String, CodingKey {
            case name, shape, dtype, kind, pixelRange = "pixel_range", l2Normalized = "l2_normalized"
        }
    }

    public struct Parity: Codable, Equatable, Sendable {
        public var check: String?
        public var minCosine: Double?
        public var maxAbsError: Double?
        public var psnrDb: Double?
        public var threshold: Double?
        public var passed: Bool?

        enum CodingKeys: String, CodingKey {
            case check, minCosine = "min_cosine", maxAbsError = "max_abs_error", psnrDb = "psnr_db"
            case threshold, passed
        }
    }

    public struct Artifact: Codable, Equatable, Sendable {
        /// Path relative to the export folder.
        public var file: String
        public var sha256: String?
        public var sizeBytes: Int?
        public var model: String
        public var tower: String
        public var backend: String
        public var scheme: String
        public var deploymentTarget: String?
        public var inputs: [TensorSpec]
        public var outputs: [TensorSpec]
        public var parity: Parity?
        public var status: String?

        enum CodingKeys: String, CodingKey {
            case file, sha256, sizeBytes = "size_bytes", model, tower, backend, scheme
            case deploymentTarget = "deployment_target", inputs, outputs, parity, status
        }

        public var isText: Bool { tower == "text" }
    }

    /// An image/text encoder pair one backend and scheme offer: one entry of a model picker.
    public struct Variant: Equatable, Sendable, Identifiable {
        public var model: String
        public var displayName: String
        public var backend: String
        public var scheme: String
        public var image: Artifact?
        public var text: Artifact?

        public var id: String { "\(model)/\(backend)/\(scheme)" }
        /// Both towers are present: zero-shot and text search work.
        public var isComplete: Bool { image != nil && text != nil }
    }

    public static func load(from url: URL) throws -> ExportManifest {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw MobileCLIPError.missingFile(url.path)
        }
        return try decode(data)
    }

    public static func decode(_ data: Data) throws -> ExportManifest {
        do {
            return try JSONDecoder().decode(ExportManifest.self, from: data)
        } catch let error as DecodingError {
            throw MobileCLIPError.invalidData("manifest.json: \(Self.describe(error))")
        }
    }

    public func artifacts(backend: String) -> [Artifact] {
        artifacts.filter { $0.backend == backend }
    }

    public func artifact(backend: String, scheme: String, tower: String) -> Artifact? {
        artifacts.first { $0.backend == backend && $0.scheme == scheme && $0.tower == tower }
    }

    /// The image and text encoders of one backend and scheme, if both were exported.
    public func pair(backend: String, scheme: String) -> (image: Artifact, text: Artifact)? {
        guard let image = artifact(backend: backend, scheme: scheme, tower: "image"),
              let text = artifact(backend: backend, scheme: scheme, tower: "text") else { return nil }
        return (image, text)
    }

    /// Every (backend, scheme) the manifest offers, in the order its artifacts are listed.
    public func variants(backend: String? = nil) -> [Variant] {
        var seen: [String] = []
        var result: [Variant] = []
        for artifact in artifacts where backend == nil || artifact.backend == backend {
            let key = "\(artifact.backend)/\(artifact.scheme)"
            if seen.contains(key) { continue }
            seen.append(key)
            result.append(Variant(
                model: model,
                displayName: displayName ?? model,
                backend: artifact.backend,
                scheme: artifact.scheme,
                image: self.artifact(backend: artifact.backend, scheme: artifact.scheme, tower: "image"),
                text: self.artifact(backend: artifact.backend, scheme: artifact.scheme, tower: "text")
            ))
        }
        return result
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            let where_ = path(context)
            return "missing key \"\(key.stringValue)\"" + (where_.isEmpty ? "" : " in \(where_)")
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return "\(context.debugDescription) at \(path(context))"
        @unknown default:
            return "\(error)"
        }
    }
}

/// The exports found under one folder (e.g. the app's `Models/` resources): one subfolder per
/// model, each with its own `manifest.json`.
public struct ModelCatalog: Sendable {
    public struct Entry: Sendable, Identifiable {
        public var folder: URL
        public var manifest: ExportManifest
        public var variant: ExportManifest.Variant
        public var id: String { variant.id }

        public func url(of artifact: ExportManifest.Artifact) -> URL {
            folder.appendingPathComponent(artifact.file)
        }
    }

    public var entries: [Entry]

    /// Scans `root` and its direct subfolders for `manifest.json`; unreadable manifests are
    /// reported in `problems` instead of hiding the rest.
    public static func scan(_ root: URL, backend: String = "coreml") -> (catalog: ModelCatalog, problems: [String]) {
        let fm = FileManager.default
        var folders = [root]
        if let children = try? fm.contentsOfDirectory(at: root, includingPropertiesForKeys: nil) {
            folders += children.sorted { $0.lastPathComponent < $1.lastPathComponent }
        }
        var entries: [Entry] = []
        var problems: [String] = []
        for folder in folders {
            let manifestURL = folder.appendingPathComponent("manifest.json")
            guard fm.fileExists(atPath: manifestURL.path) else { continue }
            do {
                let manifest = try ExportManifest.load(from: manifestURL)
                for variant in manifest.variants(backend: backend) {
                    entries.append(Entry(folder: folder, manifest: manifest, variant: variant))
                }
            } catch {
                problems.append("\(folder.lastPathComponent): \(error)")
            }
        }
        return (ModelCatalog(entries: entries), problems)
    }
}
