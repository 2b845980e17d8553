import Foundation
import XCTest
@testable import MobileCLIPKit

final class PreprocessingTests: XCTestCase {
    /// Every `<photo>@<size>.expected.ppm` golden: our crop may differ from Pillow's by at most
    /// one grey level on any channel of any pixel.
    func testCropsMatchPillowWithinOneGreyLevel() throws {
        let folder = try TestData.goldens().appendingPathComponent("preprocess_ppm")
        let expectedFiles = try FileManager.default.contentsOfDirectory(atPath: folder.path)
            .filter { $0.hasSuffix(".expected.ppm") }
            .sorted()
        XCTAssertEqual(expectedFiles.count, 16)
        var sources: [String: RGBImage] = [:]
        for name in expectedFiles {
            let stem = String(name.dropLast(".expected.ppm".count))
            let parts = stem.split(separator: "@")
            let photo = String(parts[0])
            let size = try XCTUnwrap(Int(parts[1]))
            if sources[photo] == nil {
                sources[photo] = try PPM.read(folder.appendingPathComponent("\(photo).ppm"))
            }
            let source = try XCTUnwrap(sources[photo])
            let expected = try PPM.read(folder.appendingPathComponent(name))
            let crop = ImagePreprocessor(size: size).crop(source)
            XCTAssertEqual(crop.width, size)
            XCTAssertEqual(crop.height, size)
            let diff = try XCTUnwrap(crop.maxAbsDifference(to: expected), "\(stem): size mismatch")
            XCTAssertLessThanOrEqual(diff, 1, "\(stem): max abs difference \(diff) grey levels")
        }
    }

    func testTensorIsPlanarAndScaledToUnitRange() {
        // 2×1 image: red pixel, then white pixel.
        let image = RGBImage(width: 2, height: 1, pixels: [255, 0, 0, 255, 255, 255])
        let tensor = ImageTensor(image)
        XCTAssertEqual(tensor.shape, [1, 3, 1, 2])
        XCTAssertEqual(tensor.values, [1, 1, 0, 1, 0, 1])
        let normalized = ImageTensor(image, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5])
        XCTAssertEqual(normalized.values, [1, 1, -1, 1, -1, 1])
    }

    func testResizeAndCropGeometryFollowTorchvision() {
        XCTAssertTrue(ImagePreprocessor.resizedSize(width: 500, height: 375, shorterSide: 256) == (341, 256))
        XCTAssertTrue(ImagePreprocessor.resizedSize(width: 333, height: 500, shorterSide: 224) == (224, 336))
        // (341 - 256) / 2 = 42.5 rounds half to even → 42; (343 - 256) / 2 = 43.5 → 44.
        XCTAssertTrue(ImagePreprocessor.cropOrigin(width: 341, height: 256, size: 256) == (42, 0))
        XCTAssertTrue(ImagePreprocessor.cropOrigin(width: 343, height: 256, size: 256) == (44, 0))
    }

    func testUniformImageStaysUniform() {
        let image = RGBImage(width: 37, height: 23, pixels: [UInt8](repeating: 200, count: 37 * 23 * 3))
        let crop = ImagePreprocessor(size: 16).crop(image)
        XCTAssertEqual(Set(crop.pixels), [200])
    }

    func testManifestPreprocessingKeepsNormalizationInsideModel() throws {
        let manifest = try ExportManifest.load(from: TestData.manifestFixture)
        let preprocessor = ImagePreprocessor(manifest.preprocessing)
        XCTAssertEqual(preprocessor.size, 256)
        XCTAssertEqual(preprocessor.mean, [0, 0, 0])
        XCTAssertEqual(preprocessor.std, [1, 1, 1])
    }

    func testPPMRoundTripAndErrors() throws {
        let image = RGBImage(width: 3, height: 2, pixels: (0..<18).map { UInt8($0 * 10) })
        XCTAssertEqual(try PPM.decode(PPM.encode(image)), image)
        let commented = Data("P6\n# comment\n3 2\n255\n".utf8) + Data(image.pixels)
        XCTAssertEqual(try PPM.decode(commented), image)
        XCTAssertThrowsError(try PPM.decode(Data("P3\n1 1\n255\n0 0 0".utf8)))
        XCTAssertThrowsError(try PPM.decode(Data("P6\n4 4\n255\n".utf8) + Data([1, 2, 3])))
    }
}
