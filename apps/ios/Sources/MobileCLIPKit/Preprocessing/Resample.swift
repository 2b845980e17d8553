/// Antialiased bilinear resize reproducing Pillow's `Image.resize(size, Image.BILINEAR)`:
/// a separable triangle filter whose support grows with the downscale factor, weights rounded
/// to 22-bit fixed point, horizontal pass first, 8-bit intermediate image.
enum BilinearResampler {
    private static let precisionBits = 32 - 8 - 2

    /// Per output index: first source index and fixed-point weights.
    private struct Taps {
        var start: [Int]
        var weights: [[Int32]]
    }

    private static func taps(inSize: Int, outSize: Int) -> Taps {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1.0)
        let support = 1.0 * filterScale
        let inverseFilterScale = 1.0 / filterScale
        var starts: [Int] = []
        var weights: [[Int32]] = []
        starts.reserveCapacity(outSize)
        weights.reserveCapacity(outSize)
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            // C `(int)` casts truncate toward zero; the clamps make that equal to floor here.
            let xmin = max(Int(center - support + 0.5), 0)
            let xmax = min(Int(center + support + 0.5), inSize)
            var w = (xmin..<xmax).map { x -> Double in
                let t = abs((Double(x) - center + 0.5) * inverseFilterScale)
                return t < 1.0 ? 1.0 - t : 0.0
            }
            let total = w.reduce(0, +)
            if total != 0 { w = w.map { $0 / total } }
            let one = Double(1 << precisionBits)
            starts.append(xmin)
            weights.append(w.map { Int32($0 < 0 ? -0.5 + $0 * one : 0.5 + $0 * one) })
        }
        return Taps(start: starts, weights: weights)
    }

    private static func clip8(_ accumulator: Int64) -> UInt8 {
        UInt8(clamping: accumulator >> Int64(precisionBits))
    }

    static func resize(_ image: RGBImage, width: Int, height: Int) -> RGBImage {
        var current = image
        if width != current.width {
            current = horizontal(current, outWidth: width)
        }
        if height != current.height {
            current = vertical(current, outHeight: height)
        }
        return current
    }

    private static func horizontal(_ image: RGBImage, outWidth: Int) -> RGBImage {
        let taps = taps(inSize: image.width, outSize: outWidth)
        let half = Int64(1) << Int64(precisionBits - 1)
        var out = [UInt8](repeating: 0, count: outWidth * image.height * 3)
        image.pixels.withUnsafeBufferPointer { src in
            for y in 0..<image.height {
                let row = y * image.width * 3
                for x in 0..<outWidth {
                    let start = taps.start[x]
                    var acc: (Int64, Int64, Int64) = (half, half, half)
                    for (k, weight) in taps.weights[x].enumerated() {
                        let p = row + (start + k) * 3
                        let w = Int64(weight)
                        acc.0 += Int64(src[p]) * w
                        acc.1 += Int64(src[p + 1]) * w
                        acc.2 += Int64(src[p + 2]) * w
                    }
                    let o = (y * outWidth + x) * 3
                    out[o] = clip8(acc.0)
                    out[o + 1] = clip8(acc.1)
                    out[o + 2] = clip8(acc.2)
                }
            }
        }
        return RGBImage(width: outWidth, height: image.height, pixels: out)
    }

    private static func vertical(_ image: RGBImage, outHeight: Int) -> RGBImage {
        let taps = taps(inSize: image.height, outSize: outHeight)
        let half = Int64(1) << Int64(precisionBits - 1)
        let rowLength = image.width * 3
        var out = [UInt8](repeating: 0, count: rowLength * outHeight)
        image.pixels.withUnsafeBufferPointer { src in
            for y in 0..<outHeight {
                let start = taps.start[y]
                let weights = taps.weights[y]
                for i in 0..<rowLength {
                    var acc = half
                    for (k, weight) in weights.enumerated() {
                        acc += Int64(src[(start + k) * rowLength + i]) * Int64(weight)
                    }
                    out[y * rowLength + i] = clip8(acc)
                }
            }
        }
        return RGBImage(width: image.width, height: outHeight, pixels: out)
    }
}
