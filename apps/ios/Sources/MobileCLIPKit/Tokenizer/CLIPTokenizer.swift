import Foundation

/// CLIP byte-level BPE tokenizer; gives the same ids as the Python reference
/// (`mobileclip_deploy.tokenize`, itself checked against the OpenAI/open_clip tokenizer).
public final class CLIPTokenizer: @unchecked Sendable {
    public static let startToken = 49406
    public static let endToken = 49407
    public static let padToken = 0
    public static let contextLength = 77

    public let startToken: Int
    public let endToken: Int
    public let padToken: Int
    public let contextLength: Int

    private let encoder: [String: Int]
    private let ranks: [String: Int]
    private let byteEncoder: [String]
    private var cache: [String: [Int]] = [:]
    private let cacheLock = NSLock()

    public init(
        assets: TokenizerAssets,
        contextLength: Int = CLIPTokenizer.contextLength,
        startToken: Int = CLIPTokenizer.startToken,
        endToken: Int = CLIPTokenizer.endToken,
        padToken: Int = CLIPTokenizer.padToken
    ) {
        byteEncoder = Self.makeByteEncoder()
        var ranks: [String: Int] = [:]
        ranks.reserveCapacity(assets.merges.count)
        for (rank, merge) in assets.merges.enumerated() {
            ranks["\(merge.0) \(merge.1)"] = rank
        }
        self.ranks = ranks
        encoder = assets.vocab ?? Self.makeVocab(byteEncoder: byteEncoder, merges: assets.merges)
        self.contextLength = contextLength
        self.startToken = startToken
        self.endToken = endToken
        self.padToken = padToken
    }

    /// Tokenizer over the merges shipped in the package.
    public convenience init() throws {
        try self.init(assets: .bundled())
    }

    /// Tokenizer from an export folder: its tokenizer files, configured by its `manifest.json`
    /// when there is one (a bare folder with `merges.txt` works too).
    public convenience init(exportFolder: URL) throws {
        let manifestURL = exportFolder.appendingPathComponent("manifest.json")
        let info = FileManager.default.fileExists(atPath: manifestURL.path)
            ? try ExportManifest.load(from: manifestURL).tokenizer : nil
        try self.init(
            assets: .load(from: exportFolder),
            contextLength: info?.contextLength ?? Self.contextLength,
            startToken: info?.sotToken ?? Self.startToken,
            endToken: info?.eotToken ?? Self.endToken,
            padToken: info?.padToken ?? Self.padToken
        )
    }

    public var vocabularySize: Int { encoder.count }

    /// Token ids of `text` without start/end tokens or padding.
    public func encode(_ text: String) -> [Int] {
        var ids: [Int] = []
        for piece in PreTokenizer.split(TextCleaner.clean(text)) {
            ids.append(contentsOf: bpeIDs(piece))
        }
        return ids
    }

    /// `contextLength` ids: start, text, end, then padding. Long texts are cut so that the end
    /// token still occupies the last slot.
    public func tokenize(_ text: String) -> [Int] {
        var ids = [startToken] + encode(text) + [endToken]
        if ids.count > contextLength {
            ids.removeLast(ids.count - contextLength)
            ids[contextLength - 1] = endToken
        }
        return ids + Array(repeating: padToken, count: contextLength - ids.count)
    }

    /// `tokenize` as Int32, the dtype the exported text encoders take.
    public func tokenizeInt32(_ text: String) -> [Int32] {
        tokenize(text).map { Int32($0) }
    }

    // MARK: - BPE

    private func bpeIDs(_ piece: String) -> [Int] {
        cacheLock.lock()
        let cached = cache[piece]
        cacheLock.unlock()
        if let cached { return cached }

        let ids: [Int]
        if PreTokenizer.specialTokens.contains(piece) {
            ids = [piece == PreTokenizer.specialTokens[0] ? startToken : endToken]
        } else {
            let symbols = piece.utf8.map { byteEncoder[Int($0)] }
            ids = bpe(symbols).compactMap { encoder[$0] }
        }
        cacheLock.lock()
        cache[piece] = ids
        cacheLock.unlock()
        return ids
    }

    /// Repeatedly merges the adjacent pair with the lowest rank, all occurrences left to right.
    private func bpe(_ symbols: [String]) -> [String] {
        guard let last = symbols.last else { return [] }
        var word = Array(symbols.dropLast()) + [last + "</w>"]
        while word.count > 1 {
            var best: (rank: Int, first: String, second: String)?
            for k in 0..<(word.count - 1) {
                if let rank = ranks["\(word[k]) \(word[k + 1])"], rank < (best?.rank ?? Int.max) {
                    best = (rank, word[k], word[k + 1])
                }
            }
            guard let best else { break }
            var merged: [String] = []
            merged.reserveCapacity(word.count)
            var k = 0
            while k < word.count {
                if k < word.count - 1 && word[k] == best.first && word[k + 1] == best.second {
                    merged.append(best.first + best.second)
                    k += 2
                } else {
                    merged.append(word[k])
                    k += 1
                }
            }
            word = merged
        }
        return word
    }

    // MARK: - Vocabulary

    /// GPT-2's reversible byte → printable character table: printable Latin-1 bytes map to
    /// themselves, the rest to code points from U+0100 upwards in byte order.
    static func makeByteEncoder() -> [String] {
        var table = [String](repeating: "", count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            let printable = (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
            let code = printable ? UInt32(byte) : next
            if !printable { next += 1 }
            table[byte] = String(Unicode.Scalar(code)!)
        }
        return table
    }

    /// CLIP's vocabulary order: byte symbols (printable bytes first), the same with `</w>`,
    /// the merged pairs, then the two special tokens.
    static func makeVocab(byteEncoder: [String], merges: [(String, String)]) -> [String: Int] {
        let printableFirst = (0..<256).sorted { a, b in
            let pa = byteEncoder[a].unicodeScalars.first!.value < 256
            let pb = byteEncoder[b].unicodeScalars.first!.value < 256
            return pa != pb ? pa : a < b
        }
        var tokens = printableFirst.map { byteEncoder[$0] }
        tokens += tokens.map { $0 + "</w>" }
        tokens += merges.map { $0.0 + $0.1 }
        tokens += PreTokenizer.specialTokens
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(tokens.count)
        for (id, token) in tokens.enumerated() {
            vocab[token] = id
        }
        return vocab
    }
}
