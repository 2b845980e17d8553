import CoreVideo
import Foundation
import MobileCLIPKit

/// Owns the loaded model off the main thread: every method hops onto one serial queue, so the
/// pipeline is never touched concurrently and model loading never blocks the UI.
final class ClassifierWorker: @unchecked Sendable {
    private let queue = DispatchQueue(label: "classifier", qos: .userInitiated)
    private var pipeline: FramePipeline?

    /// Replaces the current model; completes with the load time in milliseconds.
    func load(_ entry: ModelCatalog.Entry, completion: @escaping (Result<Double, Error>) -> Void) {
        queue.async {
            self.pipeline?.unload()
            self.pipeline = nil
            do {
                let pipeline = try FramePipeline(entry: entry)
                self.pipeline = pipeline
                completion(.success(pipeline.loadMs))
            } catch {
                completion(.failure(error))
            }
        }
    }

    /// Completes with nil while no model is loaded.
    func classify(
        _ frame: CVPixelBuffer, classNames: [String], template: String,
        completion: @escaping (Result<FramePipeline.Result?, Error>) -> Void
    ) {
        queue.async {
            completion(Result { try self.pipeline?.classify(frame, classNames: classNames, template: template, topK: 5) })
        }
    }

    func benchmark(_ options: BenchOptions, completion: @escaping (Result<[BenchRecord], Error>) -> Void) {
        queue.async {
            completion(Result {
                let records = try CoreMLBenchmark.run(options)
                for record in records { try record.append(to: options.output) }
                return records
            })
        }
    }
}
