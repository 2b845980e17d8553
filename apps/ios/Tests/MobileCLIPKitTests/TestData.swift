import Foundation
import XCTest

/// Locations of the repository's shared reference data and fixtures.
enum TestData {
    /// This file is apps/ios/Tests/MobileCLIPKitTests/TestData.swift; the repository root is five levels up.
    static let repoRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<5 { url.deleteLastPathComponent() }
        return url
    }()

    /// `$MOBILECLIP_SHARED`, else `<repo>/../shared`. Missing data is an error, not a skip:
    /// parity tests that silently skip would hide regressions.
    static func shared() throws -> URL {
        let url = ProcessInfo.processInfo.environment["MOBILECLIP_SHARED"].map { URL(fileURLWithPath: $0) }
            ?? repoRoot.deletingLastPathComponent().appendingPathComponent("shared")
        guard FileManager.default.fileExists(atPath: url.appendingPathComponent("reference").path) else {
            throw TestDataError("shared reference data not found at \(url.path); set MOBILECLIP_SHARED")
        }
        return url
    }

    static func goldens() throws -> URL {
        try shared().appendingPathComponent("reference/goldens")
    }

    static var manifestFixture: URL {
        repoRoot.appendingPathComponent("tests/fixtures/manifest_example.json")
    }

    static func temporaryFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("MobileCLIPKitTests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

struct TestDataError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
