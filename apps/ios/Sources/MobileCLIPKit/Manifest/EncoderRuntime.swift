import Foundation

/// Which Apple runtime runs an export's encoders. An export may bundle both: `.aimodel` assets
/// (backend `coreai`, Core AI on iOS/macOS 27) and `.mlpackage` programs (backend `coreml`, Core ML
/// on older systems). The manifest's `backend` field says which file is which.
public enum EncoderRuntime: String, CaseIterable, Sendable {
    case coreAI = "coreai"
    case coreML = "coreml"

    /// The manifest backend whose artifacts this runtime loads.
    public var backend: String { rawValue }

    /// Whether this OS has Core AI (iOS 27 / macOS 27 and an SDK that ships the framework).
    public static var coreAIAvailable: Bool {
        #if canImport(CoreAI)
        if #available(iOS 27.0, macOS 27.0, *) { return true }
        #endif
        return false
    }

    /// Core AI first where the OS has it, then Core ML.
    public static func preferenceOrder(coreAIAvailable: Bool = EncoderRuntime.coreAIAvailable) -> [EncoderRuntime] {
        coreAIAvailable ? [.coreAI, .coreML] : [.coreML]
    }
}

extension ExportManifest {
    /// The image/text encoder pair an app should run: the first runtime in the preference order
    /// whose two towers the manifest lists (for `scheme`, or its first scheme of that backend).
    public func preferredPair(scheme: String? = nil,
                              coreAIAvailable: Bool = EncoderRuntime.coreAIAvailable)
        -> (runtime: EncoderRuntime, image: Artifact, text: Artifact)? {
        for runtime in EncoderRuntime.preferenceOrder(coreAIAvailable: coreAIAvailable) {
            let schemes = scheme.map { [$0] } ?? variants(backend: runtime.backend).map(\.scheme)
            for candidate in schemes {
                if let pair = pair(backend: runtime.backend, scheme: candidate) {
                    return (runtime, pair.image, pair.text)
                }
            }
        }
        return nil
    }

    /// The encoders one runtime would load (for the benchmark: every tower and scheme it offers).
    public func artifacts(runtime: EncoderRuntime) -> [Artifact] {
        artifacts(backend: runtime.backend)
    }
}
