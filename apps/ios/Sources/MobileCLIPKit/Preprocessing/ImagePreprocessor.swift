/// A planar NCHW Float32 image tensor (batch 1, RGB), the input layout of the image encoders.
public struct ImageTensor: Equatable, Sendable {
    public var width: Int
    public var height: Int
    /// `3 * height * width` values: the R plane, then G, then B.
    public var values: [Float]

    public init(width: Int, height: Int, values: [Float]) {
        precondition(values.count == 3 * width * height, "ImageTensor needs 3 * width * height values")
        self.width = width
        self.height = height
        self.values = values
    }

    public var shape: [Int] { [1, 3, height, width] }

    /// Planar values in [0, 1], then `(x - mean) / std` per channel.
    public init(_ image: RGBImage, mean: [Float] = [0, 0, 0], std: [Float] = [1, 1, 1]) {
        let plane = image.width * image.height
        var values = [Float](repeating: 0, count: 3 * plane)
        for i in 0..<plane {
            for c in 0..<3 {
                values[c * plane + i] = (Float(image.pixels[i * 3 + c]) / 255 - mean[c]) / std[c]
            }
        }
        self.init(width: image.width, height: image.height, values: values)
    }
}

/// The reference image transform: shorter side resized to `size` (antialiased bilinear, as
/// Pillow), then a centred `size` × `size` crop (as torchvision's `CenterCrop`).
///
/// Input it expects, as the Python toolkit's `load_image`/`to_rgb` produces it: an `RGBImage` of
/// 8-bit sRGB samples, already upright (EXIF / `CGImagePropertyOrientation` applied: phone photos are
/// stored sideways), with any transparency composited on white (255, 255, 255), 16-bit sources scaled
/// to 8 bits (value / 257, rounded), grayscale, palette and CMYK expanded to RGB. It does none of
/// that itself; give it such pixels or the embeddings differ from the Python ones.
public struct ImagePreprocessor: Sendable {
    public var size: Int
    public var mean: [Float]
    public var std: [Float]

    public init(size: Int, mean: [Float] = [0, 0, 0], std: [Float] = [1, 1, 1]) {
        self.size = size
        self.mean = mean
        self.std = std
    }

    /// Size and, when the model does not normalize internally, mean/std from a manifest.
    public init(_ preprocessing: ExportManifest.Preprocessing) {
        let outside = preprocessing.normalization != "inside_model"
        self.init(
            size: preprocessing.imageSize,
            mean: outside ? preprocessing.mean ?? [0, 0, 0] : [0, 0, 0],
            std: outside ? preprocessing.std ?? [1, 1, 1] : [1, 1, 1]
        )
    }

    /// Output size of the resize step: torchvision keeps `int(size * long / short)` for the long side.
    public static func resizedSize(width: Int, height: Int, shorterSide size: Int) -> (width: Int, height: Int) {
        if width <= height {
            return (size, Int(Double(size * height) / Double(width)))
        }
        return (Int(Double(size * width) / Double(height)), size)
    }

    /// Top-left corner of the centred crop; Python's `round` (half to even) decides ties.
    public static func cropOrigin(width: Int, height: Int, size: Int) -> (left: Int, top: Int) {
        let left = (Double(width - size) / 2).rounded(.toNearestOrEven)
        let top = (Double(height - size) / 2).rounded(.toNearestOrEven)
        return (Int(left), Int(top))
    }

    /// The RGB crop the model sees.
    public func crop(_ image: RGBImage) -> RGBImage {
        let target = Self.resizedSize(width: image.width, height: image.height, shorterSide: size)
        let resized = BilinearResampler.resize(image, width: target.width, height: target.height)
        let origin = Self.cropOrigin(width: resized.width, height: resized.height, size: size)
        return resized.cropped(left: origin.left, top: origin.top, width: size, height: size)
    }

    public func tensor(_ image: RGBImage) -> ImageTensor {
        ImageTensor(crop(image), mean: mean, std: std)
    }
}
