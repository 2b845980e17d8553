import MobileCLIPKit
import SwiftUI

struct ContentView: View {
    @StateObject private var model = DemoModel()

    var body: some View {
        ZStack(alignment: .bottom) {
            CameraPreview(session: model.camera.session)
                .ignoresSafeArea()
            VStack(alignment: .leading, spacing: 10) {
                header
                predictionList
                promptEditor
                Text(model.status)
                    .font(.caption2)
                    .foregroundStyle(.secondary)
                    .lineLimit(3)
            }
            .padding()
            .background(.ultraThinMaterial, in: RoundedRectangle(cornerRadius: 16))
            .padding()
        }
        .task { await model.startCamera() }
    }

    private var header: some View {
        HStack {
            Picker("Model", selection: $model.selectedID) {
                ForEach(model.entries) { entry in
                    Text("\(entry.variant.displayName) · \(entry.variant.scheme)").tag(Optional(entry.id))
                }
            }
            .pickerStyle(.menu)
            Spacer()
            VStack(alignment: .trailing) {
                Text(String(format: "%.1f FPS", model.framesPerSecond))
                Text(String(format: "%.1f ms", model.latencyMs))
            }
            .font(.caption.monospacedDigit())
            Button("Bench", action: model.runBenchmark)
                .buttonStyle(.bordered)
                .font(.caption)
        }
    }

    private var predictionList: some View {
        VStack(alignment: .leading, spacing: 4) {
            ForEach(model.predictions, id: \.label) { prediction in
                HStack {
                    Text(prediction.label)
                    Spacer()
                    ProgressView(value: Double(prediction.probability))
                        .frame(width: 100)
                    Text(String(format: "%3.0f%%", prediction.probability * 100))
                        .font(.body.monospacedDigit())
                        .frame(width: 48, alignment: .trailing)
                }
            }
        }
    }

    private var promptEditor: some View {
        VStack(alignment: .leading, spacing: 6) {
            HStack(spacing: 4) {
                TextField("prefix", text: $model.prefix)
                Text("{class}").foregroundStyle(.secondary)
                TextField("suffix", text: $model.suffix)
                    .frame(maxWidth: 80)
            }
            TextField("class names, comma separated", text: $model.classNamesText, axis: .vertical)
                .lineLimit(1...3)
        }
        .textFieldStyle(.roundedBorder)
        .autocorrectionDisabled()
        .textInputAutocapitalization(.never)
        .font(.callout)
    }
}
