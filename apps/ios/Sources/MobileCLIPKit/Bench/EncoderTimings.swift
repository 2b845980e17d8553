import Foundation

/// Load, first-inference and warm-inference times of one encoder, in milliseconds.
/// Kept apart because the first call on Apple hardware includes a one-off device specialization
/// that can take far longer than a warm call.
public struct EncoderTimings: Equatable, Sendable {
    public var loadMs: Double
    public var firstInferenceMs: Double
    /// Timed iterations after the warm-up calls.
    public var warmMs: [Double]

    public init(loadMs: Double, firstInferenceMs: Double, warmMs: [Double]) {
        self.loadMs = loadMs
        self.firstInferenceMs = firstInferenceMs
        self.warmMs = warmMs
    }
}

/// Load/unload behind a small protocol so apps can free memory and tests can use fakes.
public protocol ModelLoading: AnyObject {
    var isLoaded: Bool { get }
    func load() throws
    func unload()
    /// Runs one throw-away inference so the first real call is not the slow one.
    func prewarm() throws
}

/// Milliseconds taken by `body`, from a monotonic clock.
public func measureMilliseconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1_000_000
}

/// The benchmark protocol used by `mobileclip-bench`: unload, time `load()`, time the first
/// inference, run `warmup` untimed calls, then time `iterations` calls.
public func benchmark(
    model: ModelLoading, warmup: Int, iterations: Int, inference: () throws -> Void
) throws -> EncoderTimings {
    precondition(warmup >= 0 && iterations > 0, "need warmup >= 0 and iterations > 0")
    model.unload()
    let loadMs = try measureMilliseconds { try model.load() }
    let firstMs = try measureMilliseconds(inference)
    for _ in 0..<warmup { try inference() }
    var samples: [Double] = []
    samples.reserveCapacity(iterations)
    for _ in 0..<iterations {
        samples.append(try measureMilliseconds(inference))
    }
    return EncoderTimings(loadMs: loadMs, firstInferenceMs: firstMs, warmMs: samples)
}
