import CoreVideo
import Foundation
import ImageIO
import MobileCLIPKit

/// Everything one selected model needs to turn a camera frame into ranked classes. Built off the
/// main thread (loading and prewarming Core ML models takes seconds) and used from the camera queue.
final class FramePipeline {
    struct Result {
        var predictions: [Prediction]
        var imageEncoderMs: Double
    }

    let entry: ModelCatalog.Entry
    private let imageEncoder: CoreMLEncoder
    private let textEncoder: CoreMLEncoder
    private let classifier: ZeroShotClassifier
    private let preprocessor: CoreImagePreprocessor

    /// Load plus prewarm (first inference) of both encoders, for the status line.
    let loadMs: Double

    init(entry: ModelCatalog.Entry) throws {
        guard let image = entry.variant.image, let text = entry.variant.text else {
            throw MobileCLIPError.missingFile("\(entry.variant.id) needs both an image and a text encoder")
        }
        let imageEncoder = CoreMLEncoder(exportFolder: entry.folder, artifact: image)
        let textEncoder = CoreMLEncoder(exportFolder: entry.folder, artifact: text)
        loadMs = try measureMilliseconds {
            try imageEncoder.prewarm()
            try textEncoder.prewarm()
        }
        self.entry = entry
        self.imageEncoder = imageEncoder
        self.textEncoder = textEncoder
        classifier = ZeroShotClassifier(
            tokenizer: try CLIPTokenizer(exportFolder: entry.folder),
            textEncoder: textEncoder,
            logitScale: entry.manifest.logitScale)
        preprocessor = CoreImagePreprocessor(entry.manifest.preprocessing)
    }

    /// Portrait UI with the back camera: sensor frames arrive rotated, `.right` uprights them.
    func classify(_ frame: CVPixelBuffer, classNames: [String], template: String, topK: Int) throws -> Result {
        let tensor = preprocessor.tensor(frame, orientation: .right)
        var embedding: [Float] = []
        let encoderMs = try measureMilliseconds { embedding = try imageEncoder.encode(image: tensor) }
        let predictions = try classifier.classify(
            imageEmbedding: embedding, classNames: classNames, templates: [template], topK: topK)
        return Result(predictions: predictions, imageEncoderMs: encoderMs)
    }

    func unload() {
        imageEncoder.unload()
        textEncoder.unload()
    }
}
