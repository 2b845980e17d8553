// swift-tools-version:5.9
// MobileCLIPKit: tokenizer, preprocessing, manifest, zero-shot and search for MobileCLIP exports.
// Portable code builds and tests on Linux; CoreML code is fenced with `#if canImport(CoreML)`.
import PackageDescription

let package = Package(
    name: "MobileCLIPKit",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "MobileCLIPKit", targets: ["MobileCLIPKit"]),
        .executable(name: "mobileclip-tokenize", targets: ["mobileclip-tokenize"]),
        .executable(name: "mobileclip-bench", targets: ["mobileclip-bench"]),
    ],
    targets: [
        .target(
            name: "MobileCLIPKit",
            resources: [.copy("Resources/merges.txt"), .copy("Resources/html_entities.txt")]
        ),
        .executableTarget(name: "mobileclip-tokenize", dependencies: ["MobileCLIPKit"]),
        .executableTarget(name: "mobileclip-bench", dependencies: ["MobileCLIPKit"]),
        .testTarget(name: "MobileCLIPKitTests", dependencies: ["MobileCLIPKit"]),
    ]
)
