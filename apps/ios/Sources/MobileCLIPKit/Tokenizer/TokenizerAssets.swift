import Foundation

/// The files a `CLIPTokenizer` is built from: BPE merges and, optionally, an explicit vocabulary.
public struct TokenizerAssets: Sendable {
    /// Merge rules in priority order.
    public var merges: [(String, String)]
    /// Token string → id. When nil the vocabulary is rebuilt from the merges the way CLIP does.
    public var vocab: [String: Int]?

    /// CLIP uses the first 49152 − 256 − 2 merges of its BPE file; later lines are never used.
    public static let mergeCount = 49152 - 256 - 2

    public init(merges: [(String, String)], vocab: [String: Int]? = nil) {
        self.merges = merges
        self.vocab = vocab
    }

    /// The merges shipped with the package (OpenAI CLIP's `bpe_simple_vocab_16e6`, MIT).
    public static func bundled() throws -> TokenizerAssets {
        guard let url = Bundle.module.url(forResource: "merges", withExtension: "txt") else {
            throw MobileCLIPError.missingFile("merges.txt in the MobileCLIPKit bundle")
        }
        return TokenizerAssets(merges: try parseMerges(Data(contentsOf: url)))
    }

    /// Loads from an export folder: the paths in its `manifest.json` if there is one, otherwise
    /// `merges.txt` / `vocab.json` at the top level or in `tokenizer/`.
    public static func load(from folder: URL) throws -> TokenizerAssets {
        var mergeCandidates = ["merges.txt", "tokenizer/merges.txt"]
        var vocabCandidates = ["vocab.json", "tokenizer/vocab.json"]
        let manifestURL = folder.appendingPathComponent("manifest.json")
        if FileManager.default.fileExists(atPath: manifestURL.path) {
            let manifest = try ExportManifest.load(from: manifestURL)
            mergeCandidates = [manifest.tokenizer.merges]
            vocabCandidates = manifest.tokenizer.vocab.map { [$0] } ?? []
        }
        let fm = FileManager.default
        guard let mergesURL = mergeCandidates.map({ folder.appendingPathComponent($0) })
            .first(where: { fm.fileExists(atPath: $0.path) }) else {
            throw MobileCLIPError.missingFile("\(mergeCandidates.joined(separator: " or ")) in \(folder.path)")
        }
        let merges = try parseMerges(Data(contentsOf: mergesURL))
        var vocab: [String: Int]?
        if let vocabURL = vocabCandidates.map({ folder.appendingPathComponent($0) })
            .first(where: { fm.fileExists(atPath: $0.path) }) {
            vocab = try JSONDecoder().decode([String: Int].self, from: Data(contentsOf: vocabURL))
        }
        return TokenizerAssets(merges: merges, vocab: vocab)
    }

    /// One "a b" pair per line. A `#version` header (as in the original BPE file) is skipped and
    /// anything beyond `mergeCount` is ignored, so the raw CLIP file works too.
    public static func parseMerges(_ data: Data) throws -> [(String, String)] {
        guard let text = String(data: data, encoding: .utf8) else {
            throw MobileCLIPError.invalidData("merges file is not UTF-8")
        }
        var merges: [(String, String)] = []
        merges.reserveCapacity(mergeCount)
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            if number == 0 && line.hasPrefix("#version") { continue }
            let parts = line.split(separator: " ")
            guard parts.count == 2 else {
                throw MobileCLIPError.invalidData("merges line \(number + 1) is not \"a b\": \(line)")
            }
            merges.append((String(parts[0]), String(parts[1])))
            if merges.count == mergeCount { break }
        }
        return merges
    }
}
