import Foundation
import XCTest
@testable import MobileCLIPKit

/// The portable half of the Core AI support: which bundled files an app runs on which OS.
final class EncoderRuntimeTests: XCTestCase {
    private func manifest(_ files: [(tower: String, backend: String, scheme: String, suffix: String)]) throws
        -> ExportManifest {
        let artifacts = files.map { f in
            """
            {"file": "s0_\(f.tower)_\(f.backend)_\(f.scheme).\(f.suffix)", "model": "mobileclip-s0",
             "tower": "\(f.tower)", "backend": "\(f.backend)", "scheme": "\(f.scheme)", "inputs": [], "outputs": []}
            """
        }
        let json = """
        {"format_version": 1, "model": "mobileclip-s0", "embed_dim": 512, "logit_scale": 100,
         "preprocessing": {"image_size": 256}, "tokenizer": {"merges": "tokenizer/merges.txt"},
         "artifacts": [\(artifacts.joined(separator: ","))]}
        """
        return try ExportManifest.decode(Data(json.utf8))
    }

    private var both: [(tower: String, backend: String, scheme: String, suffix: String)] {
        [("image", "coreml", "fp16", "mlpackage"), ("text", "coreml", "fp16", "mlpackage"),
         ("image", "coreai", "pal4", "aimodel"), ("text", "coreai", "pal4", "aimodel")]
    }

    func testCoreAIRunsWhereTheOSHasIt() throws {
        let pair = try XCTUnwrap(try manifest(both).preferredPair(coreAIAvailable: true))
        XCTAssertEqual(pair.runtime, .coreAI)
        XCTAssertEqual(pair.image.file, "s0_image_coreai_pal4.aimodel")
        XCTAssertEqual(pair.text.file, "s0_text_coreai_pal4.aimodel")
    }

    func testCoreMLRunsBelowIOS27() throws {
        let pair = try XCTUnwrap(try manifest(both).preferredPair(coreAIAvailable: false))
        XCTAssertEqual(pair.runtime, .coreML)
        XCTAssertEqual(pair.image.file, "s0_image_coreml_fp16.mlpackage")
        XCTAssertEqual(pair.text.file, "s0_text_coreml_fp16.mlpackage")
    }

    func testAnIncompleteCoreAIPairFallsBackToCoreML() throws {
        let files = both.filter { !($0.backend == "coreai" && $0.tower == "text") }
        let pair = try XCTUnwrap(try manifest(files).preferredPair(coreAIAvailable: true))
        XCTAssertEqual(pair.runtime, .coreML)
        XCTAssertEqual(try manifest(files).artifacts(runtime: .coreAI).map(\.file), ["s0_image_coreai_pal4.aimodel"])
    }

    func testASchemeOnlyOneRuntimeHasPicksThatRuntime() throws {
        let m = try manifest(both)
        XCTAssertEqual(m.preferredPair(scheme: "fp16", coreAIAvailable: true)?.runtime, .coreML)
        XCTAssertNil(m.preferredPair(scheme: "pal4", coreAIAvailable: false))
    }

    func testThisLinuxHostHasNoCoreAI() {
        #if os(Linux)
        XCTAssertFalse(EncoderRuntime.coreAIAvailable)
        XCTAssertEqual(EncoderRuntime.preferenceOrder(), [.coreML])
        #endif
    }
}
