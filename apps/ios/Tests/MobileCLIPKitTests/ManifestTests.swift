import Foundation
import XCTest
@testable import MobileCLIPKit

final class ManifestTests: XCTestCase {
    func testFixtureParses() throws {
        let manifest = try ExportManifest.load(from: TestData.manifestFixture)
        XCTAssertEqual(manifest.formatVersion, 1)
        XCTAssertEqual(manifest.model, "mobileclip-s0")
        XCTAssertEqual(manifest.displayName, "MobileCLIP-S0")
        XCTAssertEqual(manifest.embedDim, 512)
        XCTAssertEqual(manifest.logitScale, 100)
        XCTAssertEqual(manifest.toolVersions?["coremltools"], "9.0")
        XCTAssertEqual(manifest.preprocessing.imageSize, 256)
        XCTAssertEqual(manifest.preprocessing.normalization, "inside_model")
        XCTAssertEqual(manifest.tokenizer.merges, "tokenizer/merges.txt")
        XCTAssertEqual(manifest.tokenizer.contextLength, 77)
        XCTAssertEqual(manifest.artifacts.count, 3)

        let image = manifest.artifacts[0]
        XCTAssertEqual(image.file, "mobileclip-s0_image_coreml_fp16.mlpackage")
        XCTAssertEqual(image.inputs[0].name, "pixels")
        XCTAssertEqual(image.inputs[0].shape, [1, 3, 256, 256])
        XCTAssertEqual(image.outputs[0].name, "image_embedding")
        XCTAssertEqual(image.outputs[0].l2Normalized, false)
        XCTAssertEqual(image.parity?.passed, true)
        XCTAssertEqual(manifest.artifacts[1].inputs[0].dtype, "int32")
    }

    func testHelpersAreDataDriven() throws {
        let manifest = try ExportManifest.load(from: TestData.manifestFixture)
        XCTAssertEqual(manifest.artifacts(backend: "coreml").map(\.tower), ["image", "text"])
        let pair = try XCTUnwrap(manifest.pair(backend: "coreml", scheme: "fp16"))
        XCTAssertEqual(pair.image.file, "mobileclip-s0_image_coreml_fp16.mlpackage")
        XCTAssertEqual(pair.text.file, "mobileclip-s0_text_coreml_fp16.mlpackage")
        XCTAssertNil(manifest.pair(backend: "onnx", scheme: "fp32"), "ONNX export has no text tower")

        let variants = manifest.variants()
        XCTAssertEqual(variants.map(\.id), ["mobileclip-s0/coreml/fp16", "mobileclip-s0/onnx/fp32"])
        XCTAssertEqual(variants.map(\.isComplete), [true, false])
        XCTAssertEqual(manifest.variants(backend: "coreml").map(\.displayName), ["MobileCLIP-S0"])
    }

    func testUnknownKeysAreIgnoredAndMissingKeysNamed() throws {
        var json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: TestData.manifestFixture)) as? [String: Any])
        json["future_field"] = ["nested": [1, 2, 3]]
        var artifacts = try XCTUnwrap(json["artifacts"] as? [[String: Any]])
        artifacts[0]["calibration"] = "imagenet-samples"
        json["artifacts"] = artifacts
        let extended = try ExportManifest.decode(JSONSerialization.data(withJSONObject: json))
        XCTAssertEqual(extended.artifacts.count, 3)

        json.removeValue(forKey: "model")
        XCTAssertThrowsError(try ExportManifest.decode(JSONSerialization.data(withJSONObject: json))) { error in
            XCTAssertTrue("\(error)".contains("missing key \"model\""), "\(error)")
        }
    }

    func testCatalogScansModelFolders() throws {
        let root = try TestData.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let fm = FileManager.default
        for name in ["mobileclip-s0", "broken"] {
            try fm.createDirectory(at: root.appendingPathComponent(name), withIntermediateDirectories: true)
        }
        try fm.copyItem(at: TestData.manifestFixture, to: root.appendingPathComponent("mobileclip-s0/manifest.json"))
        try Data("{}".utf8).write(to: root.appendingPathComponent("broken/manifest.json"))

        let (catalog, problems) = ModelCatalog.scan(root)
        XCTAssertEqual(catalog.entries.map(\.id), ["mobileclip-s0/coreml/fp16"])
        XCTAssertEqual(problems.count, 1)
        XCTAssertTrue(problems[0].hasPrefix("broken:"), problems[0])
        let entry = catalog.entries[0]
        XCTAssertEqual(entry.url(of: try XCTUnwrap(entry.variant.image)).lastPathComponent,
                       "mobileclip-s0_image_coreml_fp16.mlpackage")
    }
}
