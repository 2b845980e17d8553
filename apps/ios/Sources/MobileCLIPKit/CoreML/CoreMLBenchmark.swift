#if canImport(CoreML)
import CoreML
import Foundation

/// Runs an export's Core ML encoders as `mobileclip-bench` describes and returns one record per
/// encoder. Shared by the command-line tool (Mac) and the demo app (device).
public enum CoreMLBenchmark {
    public static func run(_ options: BenchOptions) throws -> [BenchRecord] {
        let manifest = try ExportManifest.load(from: options.export.appendingPathComponent("manifest.json"))
        let artifacts = manifest.artifacts(backend: "coreml").filter { options.tower.includes($0.tower) }
        guard !artifacts.isEmpty else {
            throw MobileCLIPError.missingFile("no Core ML \(options.tower.rawValue) encoder in \(options.export.path)")
        }
        return try artifacts.map { artifact in
            let encoder = CoreMLEncoder(exportFolder: options.export, artifact: artifact,
                                        computeUnits: options.computeUnits)
            let timings = try benchmark(model: encoder, warmup: options.warmup, iterations: options.iterations) {
                try encoder.runDummyInference()
            }
            encoder.unload()
            return try BenchRecord(
                device: DeviceInfo.current(),
                runtime: BenchRecord.Runtime(name: "coreml", version: DeviceInfo.osVersion()),
                computeUnits: options.computeUnits.rawValue,
                artifact: BenchRecord.ArtifactInfo(artifact),
                warmup: options.warmup,
                timings: timings,
                peakMemoryMb: DeviceInfo.peakMemoryMegabytes()
            )
        }
    }
}

/// Facts about the machine for bench records.
public enum DeviceInfo {
    public static func current() -> BenchRecord.Device {
        #if os(macOS)
        let model = sysctlString("hw.model") ?? "Mac"
        let soc = sysctlString("machdep.cpu.brand_string")
        #else
        let model = sysctlString("hw.machine") ?? "unknown"
        let soc: String? = nil
        #endif
        return BenchRecord.Device(model: model, os: osVersion(), soc: soc, name: ProcessInfo.processInfo.hostName)
    }

    /// e.g. "iOS 17.4.1" or "macOS 14.3.0".
    public static func osVersion() -> String {
        let v = ProcessInfo.processInfo.operatingSystemVersion
        #if os(iOS)
        let platform = "iOS"
        #elseif os(macOS)
        let platform = "macOS"
        #else
        let platform = "unknown"
        #endif
        return "\(platform) \(v.majorVersion).\(v.minorVersion).\(v.patchVersion)"
    }

    /// Peak resident memory of this process (`ru_maxrss` is in bytes on Darwin).
    public static func peakMemoryMegabytes() -> Double? {
        var usage = rusage()
        guard getrusage(RUSAGE_SELF, &usage) == 0 else { return nil }
        return Double(usage.ru_maxrss) / 1_048_576
    }

    private static func sysctlString(_ name: String) -> String? {
        var size = 0
        guard sysctlbyname(name, nil, &size, nil, 0) == 0, size > 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: size)
        guard sysctlbyname(name, &buffer, &size, nil, 0) == 0 else { return nil }
        return String(cString: buffer)
    }
}
#endif
