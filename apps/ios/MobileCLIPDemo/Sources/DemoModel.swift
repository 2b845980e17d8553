import CoreVideo
import Foundation
import MobileCLIPKit
import QuartzCore

/// State behind the UI: the model picker (generated from the bundled manifests), the editable
/// prompt, the latest predictions and the measured speed.
@MainActor
final class DemoModel: ObservableObject {
    @Published private(set) var entries: [ModelCatalog.Entry] = []
    @Published var selectedID: String? {
        didSet { if selectedID != oldValue { loadSelected() } }
    }
    @Published var prefix = "a photo of a "
    @Published var classNamesText = "dog, cat, person, cup, keyboard, plant, car, bicycle"
    @Published var suffix = "."
    @Published private(set) var predictions: [Prediction] = []
    @Published private(set) var framesPerSecond: Double = 0
    @Published private(set) var latencyMs: Double = 0
    @Published private(set) var status = "Loading…"

    let camera = CameraController()
    private let worker = ClassifierWorker()
    private var busy = false
    private var lastFrameTime: CFTimeInterval?

    init() {
        guard let root = Bundle.main.url(forResource: "Models", withExtension: nil) else {
            status = "No Models folder in the app; run `mobileclip-deploy bundle ios` and rebuild."
            return
        }
        let (catalog, problems) = ModelCatalog.scan(root)
        entries = catalog.entries.filter(\.variant.isComplete)
        if entries.isEmpty {
            status = "No Core ML image+text pair bundled. " + problems.joined(separator: "; ")
        }
        selectedID = entries.first?.id
        loadSelected()
    }

    var classNames: [String] {
        classNamesText.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func startCamera() async {
        let started = await camera.start { [weak self] frame in
            Task { @MainActor in self?.frameArrived(frame) }
        }
        if !started { status = "Camera unavailable (permission denied or no camera)." }
    }

    private func loadSelected() {
        guard let entry = entries.first(where: { $0.id == selectedID }) else { return }
        let name = "\(entry.variant.displayName) \(entry.variant.scheme)"
        status = "Loading \(name)…"
        predictions = []
        worker.load(entry) { result in
            Task { @MainActor [weak self] in
                switch result {
                case .success(let loadMs):
                    self?.status = "\(name): loaded and prewarmed in \(Int(loadMs)) ms"
                case .failure(let error):
                    self?.status = "Could not load \(name): \(error)"
                }
            }
        }
    }

    /// Frames that arrive while the previous one is still being classified are dropped.
    private func frameArrived(_ frame: CVPixelBuffer) {
        let names = classNames
        guard !busy, !names.isEmpty else { return }
        busy = true
        let template = ZeroShotClassifier.template(prefix: prefix, suffix: suffix)
        worker.classify(frame, classNames: names, template: template) { result in
            Task { @MainActor [weak self] in self?.show(result) }
        }
    }

    private func show(_ result: Result<FramePipeline.Result?, Error>) {
        busy = false
        switch result {
        case .success(let output?):
            predictions = output.predictions
            latencyMs = output.imageEncoderMs
            let now = CACurrentMediaTime()
            if let last = lastFrameTime {
                // Exponentially smoothed so the number is readable.
                framesPerSecond = 0.9 * framesPerSecond + 0.1 / max(now - last, 1e-3)
            }
            lastFrameTime = now
        case .success(nil):
            break  // model still loading
        case .failure(let error):
            status = "Inference failed: \(error)"
        }
    }

    /// Runs `mobileclip-bench`'s protocol on the selected export on this device and appends the
    /// records to Documents/results.jsonl (visible in the Files app).
    func runBenchmark() {
        guard let entry = entries.first(where: { $0.id == selectedID }) else { return }
        status = "Benchmarking \(entry.variant.id)…"
        let documents = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
        var options = BenchOptions(export: entry.folder)
        options.output = documents.appendingPathComponent("results.jsonl")
        options.computeUnits = .cpuAndNeuralEngine
        worker.benchmark(options) { result in
            Task { @MainActor [weak self] in
                switch result {
                case .success(let records):
                    self?.status = records
                        .map { "\($0.artifact.tower): median \(String(format: "%.2f", $0.latencyMs.median)) ms" }
                        .joined(separator: ", ") + " → Documents/results.jsonl"
                case .failure(let error):
                    self?.status = "Benchmark failed: \(error)"
                }
            }
        }
    }
}
