import AVFoundation
import CoreVideo

/// Back camera frames as BGRA pixel buffers on a background queue. Late frames are dropped so
/// the classifier always sees the newest one.
final class CameraController: NSObject, AVCaptureVideoDataOutputSampleBufferDelegate {
    let session = AVCaptureSession()
    private let queue = DispatchQueue(label: "camera.frames", qos: .userInitiated)
    private var onFrame: ((CVPixelBuffer) -> Void)?

    /// Asks for permission, configures the session and starts it; `onFrame` runs on a background queue.
    func start(onFrame: @escaping (CVPixelBuffer) -> Void) async -> Bool {
        guard await AVCaptureDevice.requestAccess(for: .video) else { return false }
        self.onFrame = onFrame
        return queue.sync { configureAndRun() }
    }

    func stop() {
        queue.async { self.session.stopRunning() }
    }

    private func configureAndRun() -> Bool {
        if session.isRunning { return true }
        session.beginConfiguration()
        session.sessionPreset = .vga640x480  // the models see 224–256 px, more is wasted work
        guard session.inputs.isEmpty else {
            session.commitConfiguration()
            session.startRunning()
            return true
        }
        guard let camera = AVCaptureDevice.default(.builtInWideAngleCamera, for: .video, position: .back),
              let input = try? AVCaptureDeviceInput(device: camera), session.canAddInput(input) else {
            session.commitConfiguration()
            return false
        }
        session.addInput(input)
        let output = AVCaptureVideoDataOutput()
        output.videoSettings = [kCVPixelBufferPixelFormatTypeKey as String: kCVPixelFormatType_32BGRA]
        output.alwaysDiscardsLateVideoFrames = true
        output.setSampleBufferDelegate(self, queue: queue)
        guard session.canAddOutput(output) else {
            session.commitConfiguration()
            return false
        }
        session.addOutput(output)
        session.commitConfiguration()
        session.startRunning()
        return true
    }

    func captureOutput(_ output: AVCaptureOutput, didOutput sampleBuffer: CMSampleBuffer, from connection: AVCaptureConnection) {
        guard let pixelBuffer = CMSampleBufferGetImageBuffer(sampleBuffer) else { return }
        onFrame?(pixelBuffer)
    }
}
