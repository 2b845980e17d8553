import Foundation
import XCTest
@testable import MobileCLIPKit

private final class FakeModel: ModelLoading {
    var isLoaded = false
    var loads = 0
    func load() throws {
        isLoaded = true
        loads += 1
    }
    func unload() { isLoaded = false }
    func prewarm() throws { try load() }
}

final class BenchTests: XCTestCase {
    func testStatisticsOfOneToTen() throws {
        let stats = try XCTUnwrap(LatencyStatistics(samples: [7, 1, 10, 3, 2, 9, 4, 8, 6, 5]))
        XCTAssertEqual(stats.median, 5.5)
        XCTAssertEqual(stats.trimmedMean, 5.5)  // drops 1 and 10: mean of 2...9
        XCTAssertEqual(stats.p90, 9.1, accuracy: 1e-12)  // rank 8.1 between 9 and 10
        XCTAssertEqual(stats.min, 1)
        XCTAssertEqual(stats.max, 10)
        XCTAssertEqual(try XCTUnwrap(stats.stdev), (55.0 / 6).squareRoot(), accuracy: 1e-12)
        XCTAssertNil(LatencyStatistics(samples: []))
    }

    func testTrimmedMeanDropsOutliers() throws {
        let samples = [Double](repeating: 2, count: 18) + [100, 0]
        let stats = try XCTUnwrap(LatencyStatistics(samples: samples))
        XCTAssertEqual(stats.trimmedMean, 2)
        XCTAssertEqual(stats.median, 2)
        let single = try XCTUnwrap(LatencyStatistics(samples: [4]))
        XCTAssertEqual(single.p90, 4)
    }

    func testOneIterationHasNoStandardDeviation() throws {
        // One sample has no spread: none is shown (a 0 would read as perfectly stable timing), as in Python.
        XCTAssertNil(try XCTUnwrap(LatencyStatistics(samples: [4])).stdev)
        XCTAssertEqual(try XCTUnwrap(LatencyStatistics(samples: [4, 6])?.stdev), 2.0.squareRoot(),
                       accuracy: 1e-12)

        let one = try sampleRecord(warmMs: [2.5])
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(try one.jsonLine().utf8)) as? [String: Any])
        let latency = try XCTUnwrap(object["latency_ms"] as? [String: Any])
        XCTAssertTrue(latency["stdev"] is NSNull, "\(latency)")  // the key stays (the contract), its value is null
        XCTAssertEqual(latency["median"] as? Double, 2.5)
        XCTAssertEqual(try JSONDecoder().decode(BenchRecord.self, from: Data(try one.jsonLine().utf8)), one)
        XCTAssertFalse(one.summary.contains("stdev"), one.summary)
        XCTAssertTrue(one.summary.hasSuffix("p90 2.50 ms over 1 iteration"), one.summary)

        let three = try sampleRecord()
        XCTAssertTrue(three.summary.hasSuffix("stdev 1.00 ms over 3 iterations"), three.summary)
    }

    private func sampleRecord(warmMs: [Double] = [2, 3, 4]) throws -> BenchRecord {
        let manifest = try ExportManifest.load(from: TestData.manifestFixture)
        return try BenchRecord(
            date: Date(timeIntervalSince1970: 1_795_000_000),
            device: .init(model: "iPhone15,2", os: "iOS 17.4.1", soc: nil, name: "bench phone"),
            runtime: .init(name: "coreml", version: "iOS 17.4.1"),
            computeUnits: ComputeUnits.cpuAndNeuralEngine.rawValue,
            artifact: .init(manifest.artifacts[0]),
            warmup: 3,
            timings: EncoderTimings(loadMs: 120.5, firstInferenceMs: 30, warmMs: warmMs),
            peakMemoryMb: nil
        )
    }

    func testRecordHasEveryContractKeyWithNulls() throws {
        let line = try sampleRecord().jsonLine()
        XCTAssertFalse(line.contains("\n"))
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        XCTAssertEqual(Set(object.keys), [
            "schema", "date", "target", "device", "runtime", "compute_units", "threads", "artifact", "batch",
            "warmup", "iterations", "load_ms", "first_inference_ms", "latency_ms", "samples_ms", "peak_memory_mb",
        ])
        XCTAssertEqual(object["schema"] as? String, "mobileclip-deploy/bench-record/v1")
        XCTAssertEqual(object["date"] as? String, "2026-11-18T11:06:40Z")
        XCTAssertEqual(object["target"] as? String, "ios")
        XCTAssertEqual(object["compute_units"] as? String, "cpuAndNeuralEngine")
        XCTAssertTrue(object["threads"] is NSNull)
        XCTAssertTrue(object["peak_memory_mb"] is NSNull)
        XCTAssertEqual(object["iterations"] as? Int, 3)
        XCTAssertEqual(object["batch"] as? Int, 1)
        let device = try XCTUnwrap(object["device"] as? [String: Any])
        XCTAssertEqual(Set(device.keys), ["model", "os", "soc", "name"])
        XCTAssertTrue(device["soc"] is NSNull)
        let artifact = try XCTUnwrap(object["artifact"] as? [String: Any])
        XCTAssertEqual(Set(artifact.keys), ["file", "sha256", "model", "tower", "backend", "scheme"])
        XCTAssertEqual(artifact["tower"] as? String, "image")
        let latency = try XCTUnwrap(object["latency_ms"] as? [String: Any])
        XCTAssertEqual(Set(latency.keys), ["median", "trimmed_mean", "p90", "min", "max", "stdev"])
        XCTAssertEqual(latency["median"] as? Double, 3)
        XCTAssertEqual(object["samples_ms"] as? [Double], [2, 3, 4])
    }

    func testRecordsAppendAsJSONLinesAndRoundTrip() throws {
        let folder = try TestData.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("results.jsonl")
        let record = try sampleRecord()
        try record.append(to: url)
        try record.append(to: url)
        let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 2)
        XCTAssertEqual(try JSONDecoder().decode(BenchRecord.self, from: Data(lines[1].utf8)), record)
    }

    func testBenchmarkLoopTimesLoadFirstAndWarmCalls() throws {
        let model = FakeModel()
        var calls = 0
        let timings = try benchmark(model: model, warmup: 2, iterations: 5) {
            XCTAssertTrue(model.isLoaded)
            calls += 1
        }
        XCTAssertEqual(model.loads, 1)
        XCTAssertEqual(calls, 1 + 2 + 5)
        XCTAssertEqual(timings.warmMs.count, 5)
        XCTAssertTrue(timings.warmMs.allSatisfy { $0 >= 0 })
    }

    func testOptionsParsing() throws {
        let options = try BenchOptions.parse([
            "--export", "/tmp/export", "--tower", "text", "--compute-units", "cpuOnly",
            "--warmup", "0", "--iterations", "7", "--output", "out.jsonl",
        ])
        XCTAssertEqual(options.export.path, "/tmp/export")
        XCTAssertEqual(options.tower, .text)
        XCTAssertEqual(options.computeUnits, .cpuOnly)
        XCTAssertEqual(options.warmup, 0)
        XCTAssertEqual(options.iterations, 7)
        XCTAssertEqual(options.output.lastPathComponent, "out.jsonl")
        let onDevice = try BenchOptions.parse(
            ["--export", "Documents/s0", "--output", "Documents/bench.jsonl"],
            relativeTo: URL(fileURLWithPath: "/container", isDirectory: true))
        XCTAssertEqual(onDevice.export.path, "/container/Documents/s0")
        XCTAssertEqual(onDevice.output.path, "/container/Documents/bench.jsonl")
        XCTAssertTrue(TowerSelection.both.includes("image"))
        XCTAssertFalse(TowerSelection.text.includes("image"))

        for bad in [[String](), ["--export"], ["--export", "x", "--tower", "audio"],
                    ["--export", "x", "--iterations", "0"], ["--export", "x", "--frobnicate", "1"]] {
            XCTAssertThrowsError(try BenchOptions.parse(bad), "\(bad)")
        }
        XCTAssertThrowsError(try BenchOptions.parse(["--export", "x", "--compute-units", "gpu"])) { error in
            XCTAssertTrue("\(error)".contains("cpuOnly|cpuAndGPU|cpuAndNeuralEngine|all"), "\(error)")
        }
    }

    func testRecommendedComputeUnits() throws {
        let manifest = try ExportManifest.load(from: TestData.manifestFixture)
        XCTAssertEqual(ComputeUnits.recommended(for: manifest.artifacts[0]), .cpuAndNeuralEngine)
        var text = manifest.artifacts[1]
        XCTAssertEqual(ComputeUnits.recommended(for: text), .cpuAndNeuralEngine)
        text.scheme = "fp32"
        XCTAssertEqual(ComputeUnits.recommended(for: text), .cpuAndGPU)
    }
}
