/// Summary of warm inference latencies, the `latency_ms` object of a bench record.
///
/// Definitions shared with the Python harness: median of the sorted samples (mean of the two
/// middle ones for an even count); trimmed mean dropping `floor(n / 10)` samples at each end
/// (the middle 80%); p90 by linear interpolation between closest ranks (numpy's default);
/// sample standard deviation (n − 1; nil for a single sample, which has no spread to measure: a 0 there
/// would read as perfectly stable timing; written as `null`, like the Python harness).
public struct LatencyStatistics: Codable, Equatable, Sendable {
    public var median: Double
    public var trimmedMean: Double
    public var p90: Double
    public var min: Double
    public var max: Double
    public var stdev: Double?

    enum CodingKeys: String, CodingKey {
        case median, trimmedMean = "trimmed_mean", p90, min, max, stdev
    }

    public init(median: Double, trimmedMean: Double, p90: Double, min: Double, max: Double, stdev: Double?) {
        self.median = median
        self.trimmedMean = trimmedMean
        self.p90 = p90
        self.min = min
        self.max = max
        self.stdev = stdev
    }

    /// Nil for an empty sample.
    public init?(samples: [Double]) {
        guard !samples.isEmpty else { return nil }
        let sorted = samples.sorted()
        let n = sorted.count
        let cut = n / 10
        let middle = sorted[cut..<(n - cut)]
        let mean = samples.reduce(0, +) / Double(n)
        let variance = n > 1 ? samples.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n - 1) : nil
        self.init(
            median: Self.percentile(sorted, 50),
            trimmedMean: middle.reduce(0, +) / Double(middle.count),
            p90: Self.percentile(sorted, 90),
            min: sorted[0],
            max: sorted[n - 1],
            stdev: variance?.squareRoot()
        )
    }

    /// Every key written, a missing spread as `null` (the record contract never omits a key).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(median, forKey: .median)
        try c.encode(trimmedMean, forKey: .trimmedMean)
        try c.encode(p90, forKey: .p90)
        try c.encode(min, forKey: .min)
        try c.encode(max, forKey: .max)
        try c.encode(stdev, forKey: .stdev)
    }

    /// Linear interpolation at rank `q / 100 * (n - 1)` of ascending `sorted`.
    public static func percentile(_ sorted: [Double], _ q: Double) -> Double {
        precondition(!sorted.isEmpty, "percentile of an empty sample")
        let rank = q / 100 * Double(sorted.count - 1)
        let lower = Int(rank.rounded(.down))
        let upper = Swift.min(lower + 1, sorted.count - 1)
        let fraction = rank - Double(lower)
        return sorted[lower] + (sorted[upper] - sorted[lower]) * fraction
    }
}
