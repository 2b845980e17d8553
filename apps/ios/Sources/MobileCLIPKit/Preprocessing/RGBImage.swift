import Foundation

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (R, G, B).
public struct RGBImage: Equatable, Sendable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0 && pixels.count == width * height * 3,
                     "RGBImage needs width * height * 3 bytes")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The `width` × `height` region whose top-left corner is (`left`, `top`).
    public func cropped(left: Int, top: Int, width: Int, height: Int) -> RGBImage {
        precondition(left >= 0 && top >= 0 && left + width <= self.width && top + height <= self.height,
                     "crop outside the image")
        var out = [UInt8]()
        out.reserveCapacity(width * height * 3)
        for y in top..<(top + height) {
            let start = (y * self.width + left) * 3
            out.append(contentsOf: pixels[start..<(start + width * 3)])
        }
        return RGBImage(width: width, height: height, pixels: out)
    }

    /// Largest per-channel difference to another image of the same size (nil if sizes differ).
    public func maxAbsDifference(to other: RGBImage) -> Int? {
        guard width == other.width, height == other.height else { return nil }
        var worst = 0
        for (a, b) in zip(pixels, other.pixels) {
            worst = max(worst, abs(Int(a) - Int(b)))
        }
        return worst
    }
}

/// Binary PPM (P6, maxval 255): a decoded image format needing no codec, used for test goldens.
public enum PPM {
    public static func read(_ url: URL) throws -> RGBImage {
        try decode(Data(contentsOf: url))
    }

    public static func decode(_ data: Data) throws -> RGBImage {
        let bytes = [UInt8](data)
        var position = 0

        func skipWhitespaceAndComments() {
            while position < bytes.count {
                if bytes[position] == UInt8(ascii: "#") {
                    while position < bytes.count && bytes[position] != UInt8(ascii: "\n") { position += 1 }
                } else if [0x20, 0x09, 0x0A, 0x0D, 0x0B, 0x0C].contains(bytes[position]) {
                    position += 1
                } else {
                    return
                }
            }
        }

        func token() throws -> String {
            skipWhitespaceAndComments()
            let start = position
            while position < bytes.count && !(bytes[position] <= 0x20) { position += 1 }
            guard position > start else { throw MobileCLIPError.invalidData("truncated PPM header") }
            return String(decoding: bytes[start..<position], as: UTF8.self)
        }

        guard try token() == "P6" else { throw MobileCLIPError.invalidData("not a binary PPM (P6)") }
        guard let width = Int(try token()), let height = Int(try token()), let maxval = Int(try token()),
              width > 0, height > 0 else {
            throw MobileCLIPError.invalidData("bad PPM size")
        }
        guard maxval == 255 else { throw MobileCLIPError.unsupported("PPM maxval \(maxval) (only 255)") }
        position += 1  // exactly one whitespace byte separates the header from the raster
        let count = width * height * 3
        guard bytes.count - position >= count else { throw MobileCLIPError.invalidData("truncated PPM raster") }
        return RGBImage(width: width, height: height, pixels: Array(bytes[position..<(position + count)]))
    }

    public static func encode(_ image: RGBImage) -> Data {
        var data = Data("P6\n\(image.width) \(image.height)\n255\n".utf8)
        data.append(contentsOf: image.pixels)
        return data
    }

    public static func write(_ image: RGBImage, to url: URL) throws {
        try encode(image).write(to: url, options: .atomic)
    }
}
