import Foundation
import XCTest
@testable import MobileCLIPKit

final class TokenizerTests: XCTestCase {
    private struct Cases: Decodable {
        struct Case: Decodable {
            let text: String
            let ids: [Int]
        }
        let context_length: Int
        let cases: [Case]
    }

    private static let tokenizer = Result { try CLIPTokenizer() }

    private func tokenizer() throws -> CLIPTokenizer {
        try Self.tokenizer.get()
    }

    func testAllGoldenCasesMatchTheReferenceTokenizer() throws {
        let url = try TestData.goldens().appendingPathComponent("tokenizer_cases.json")
        let golden = try JSONDecoder().decode(Cases.self, from: Data(contentsOf: url))
        XCTAssertEqual(golden.context_length, CLIPTokenizer.contextLength)
        XCTAssertGreaterThan(golden.cases.count, 100)
        let tokenizer = try tokenizer()
        var failures = 0
        for item in golden.cases {
            let ids = tokenizer.tokenize(item.text)
            if ids != item.ids {
                failures += 1
                XCTFail("\(item.text.debugDescription): got \(ids.prefix(24)), expected \(item.ids.prefix(24))")
            }
        }
        XCTAssertEqual(failures, 0, "\(failures) of \(golden.cases.count) tokenizer cases differ")
    }

    func testKnownPrompt() throws {
        let ids = try tokenizer().tokenize("a photo of a dog.")
        XCTAssertEqual(ids.count, 77)
        XCTAssertEqual(Array(ids.prefix(8)), [49406, 320, 1125, 539, 320, 1929, 269, 49407])
        XCTAssertEqual(Set(ids.dropFirst(8)), [0])
    }

    func testVocabularyHasCLIPSize() throws {
        XCTAssertEqual(try tokenizer().vocabularySize, 49408)
    }

    func testTruncationKeepsEndTokenInLastSlot() throws {
        let ids = try tokenizer().tokenize(String(repeating: "dog ", count: 200))
        XCTAssertEqual(ids.count, 77)
        XCTAssertEqual(ids.first, 49406)
        XCTAssertEqual(ids.last, 49407)
        XCTAssertEqual(ids[75], 1929)
    }

    func testCleanerFixesWhatFtfyFixes() {
        XCTAssertEqual(TextCleaner.clean("mojibake: Ã©tÃ©"), "mojibake: été")
        XCTAssertEqual(TextCleaner.clean("ﬁne ﬂow"), "fine flow")
        XCTAssertEqual(TextCleaner.clean("Ｆｕｌｌ\u{3000}ｗｉｄｔｈ"), "full width")
        XCTAssertEqual(TextCleaner.clean("“curly” ‘quotes’"), "\"curly\" 'quotes'")
        XCTAssertEqual(TextCleaner.clean("  a\t\n b  "), "a b")
        XCTAssertEqual(TextCleaner.clean("&amp;lt;b&amp;gt; &#65;&#x42;"), "<b> ab")
        XCTAssertEqual(TextCleaner.clean("&eacutecole \u{1B}[31mred\u{1B}[0m \u{85} ŉ ﬅ"), "école red … 'n ſt")
        // Ordinary accented text is not mistaken for mojibake.
        XCTAssertEqual(TextCleaner.clean("café crème naïve"), "café crème naïve")
    }

    func testPreTokenizerSplitsLikeTheCLIPPattern() {
        XCTAssertEqual(PreTokenizer.split("it's a dog's life!!"), ["it", "'s", "a", "dog", "'s", "life", "!!"])
        XCTAssertEqual(PreTokenizer.split("<start_of_text>x 42"), ["<start_of_text>", "x", "4", "2"])
        XCTAssertEqual(PreTokenizer.split("北京 ok"), ["北京", "ok"])
    }

    func testAssetsFromExportFolderWithManifestAndVocab() throws {
        let folder = try TestData.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let tokenizerFolder = folder.appendingPathComponent("tokenizer")
        try FileManager.default.createDirectory(at: tokenizerFolder, withIntermediateDirectories: true)
        let bundled = try XCTUnwrap(Bundle.module.url(forResource: "merges", withExtension: "txt"))
        try FileManager.default.copyItem(at: bundled, to: tokenizerFolder.appendingPathComponent("merges.txt"))
        try FileManager.default.copyItem(at: TestData.manifestFixture, to: folder.appendingPathComponent("manifest.json"))

        let fromFolder = try CLIPTokenizer(exportFolder: folder)
        XCTAssertEqual(fromFolder.tokenize("a photo of a cat"), try tokenizer().tokenize("a photo of a cat"))

        // An explicit vocab.json wins over the vocabulary rebuilt from the merges.
        let vocab = ["dog</w>": 7, "a</w>": 5]
        try JSONEncoder().encode(vocab).write(to: tokenizerFolder.appendingPathComponent("vocab.json"))
        let withVocab = try CLIPTokenizer(exportFolder: folder)
        XCTAssertEqual(Array(withVocab.tokenize("a dog").prefix(4)), [49406, 5, 7, 49407])
    }

    func testRawBPEFileHeaderIsSkippedAndExtraMergesIgnored() throws {
        var lines = ["#version: 0.2", "a b", "c d"]
        lines += (0..<TokenizerAssets.mergeCount).map { "x\($0) y" }
        let merges = try TokenizerAssets.parseMerges(Data(lines.joined(separator: "\n").utf8))
        XCTAssertEqual(merges.count, TokenizerAssets.mergeCount)
        XCTAssertEqual(merges[0].0, "a")
        XCTAssertEqual(merges[1].1, "d")
        XCTAssertThrowsError(try TokenizerAssets.parseMerges(Data("a b c\n".utf8)))
    }
}
