#if canImport(CoreImage) && canImport(CoreVideo)
import CoreGraphics
import CoreImage
import CoreVideo
import Foundation
import ImageIO
#if canImport(Accelerate)
import Accelerate
#endif

/// Fast preprocessing for camera frames and photos on Apple platforms: Core Image scales with an
/// antialiasing Lanczos filter on the GPU and crops; Accelerate converts to planar floats.
///
/// It approximates `ImagePreprocessor` (a few grey levels apart on sharp edges); that portable
/// path stays the reference for parity checks.
public final class CoreImagePreprocessor: @unchecked Sendable {
    public let size: Int
    public let mean: [Float]
    public let std: [Float]
    private let context = CIContext(options: [.cacheIntermediates: false])
    private let colorSpace = CGColorSpace(name: CGColorSpace.sRGB)!

    public init(size: Int, mean: [Float] = [0, 0, 0], std: [Float] = [1, 1, 1]) {
        self.size = size
        self.mean = mean
        self.std = std
    }

    public convenience init(_ preprocessing: ExportManifest.Preprocessing) {
        let reference = ImagePreprocessor(preprocessing)
        self.init(size: reference.size, mean: reference.mean, std: reference.std)
    }

    public func tensor(_ pixelBuffer: CVPixelBuffer, orientation: CGImagePropertyOrientation = .up) -> ImageTensor {
        tensor(CIImage(cvPixelBuffer: pixelBuffer).oriented(orientation))
    }

    public func tensor(_ cgImage: CGImage, orientation: CGImagePropertyOrientation = .up) -> ImageTensor {
        tensor(CIImage(cgImage: cgImage).oriented(orientation))
    }

    /// The RGB crop, for display or for comparing with the portable path.
    public func crop(_ image: CIImage) -> RGBImage {
        let rgba = renderRGBA(image)
        var rgb = [UInt8](repeating: 0, count: size * size * 3)
        for i in 0..<(size * size) {
            rgb[i * 3] = rgba[i * 4]
            rgb[i * 3 + 1] = rgba[i * 4 + 1]
            rgb[i * 3 + 2] = rgba[i * 4 + 2]
        }
        return RGBImage(width: size, height: size, pixels: rgb)
    }

    public func tensor(_ image: CIImage) -> ImageTensor {
        let rgba = renderRGBA(image)
        let plane = size * size
        var values = [Float](repeating: 0, count: 3 * plane)
        #if canImport(Accelerate)
        rgba.withUnsafeBufferPointer { source in
            values.withUnsafeMutableBufferPointer { target in
                for c in 0..<3 {
                    let out = target.baseAddress! + c * plane
                    // Every fourth byte starting at channel c → floats, then (x/255 - mean) / std.
                    vDSP_vfltu8(source.baseAddress! + c, 4, out, 1, vDSP_Length(plane))
                    var scale = 1 / (255 * std[c])
                    var offset = -mean[c] / std[c]
                    vDSP_vsmsa(out, 1, &scale, &offset, out, 1, vDSP_Length(plane))
                }
            }
        }
        #else
        for i in 0..<plane {
            for c in 0..<3 {
                values[c * plane + i] = (Float(rgba[i * 4 + c]) / 255 - mean[c]) / std[c]
            }
        }
        #endif
        return ImageTensor(width: size, height: size, values: values)
    }

    /// Shorter side scaled to `size`, centred `size` × `size` crop, rendered as sRGB RGBA8 rows
    /// from top to bottom.
    private func renderRGBA(_ image: CIImage) -> [UInt8] {
        let extent = image.extent
        let scale = CGFloat(size) / min(extent.width, extent.height)
        let filter = CIFilter(name: "CILanczosScaleTransform")!
        filter.setValue(image.transformed(by: CGAffineTransform(translationX: -extent.minX, y: -extent.minY)),
                        forKey: kCIInputImageKey)
        filter.setValue(scale, forKey: kCIInputScaleKey)
        filter.setValue(1.0, forKey: kCIInputAspectRatioKey)
        let scaled = filter.outputImage!
        let scaledExtent = scaled.extent
        let left = ((scaledExtent.width - CGFloat(size)) / 2).rounded(.toNearestOrEven)
        let bottom = ((scaledExtent.height - CGFloat(size)) / 2).rounded(.toNearestOrEven)
        let bounds = CGRect(x: scaledExtent.minX + left, y: scaledExtent.minY + bottom,
                            width: CGFloat(size), height: CGFloat(size))
        var rgba = [UInt8](repeating: 0, count: size * size * 4)
        rgba.withUnsafeMutableBytes { buffer in
            context.render(scaled, toBitmap: buffer.baseAddress!, rowBytes: size * 4, bounds: bounds,
                           format: .RGBA8, colorSpace: colorSpace)
        }
        return rgba
    }
}
#endif
