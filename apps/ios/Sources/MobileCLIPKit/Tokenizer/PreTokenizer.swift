/// CLIP's regex pre-tokenizer, written with Unicode scalar properties so it behaves the same on
/// every platform:
/// `<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`.
///
/// Alternatives are tried in that order at each position, like a regex alternation; whitespace
/// that no alternative matches is skipped.
enum PreTokenizer {
    static let specialTokens = ["<start_of_text>", "<end_of_text>"]
    private static let contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
    private static let specialScalars = specialTokens.map { Array($0.unicodeScalars) }
    private static let contractionScalars = contractions.map { Array($0.unicodeScalars) }

    static func split(_ text: String) -> [String] {
        let s = Array(text.unicodeScalars)
        var pieces: [String] = []
        var i = 0
        while i < s.count {
            let length = matchLength(s, at: i)
            if length == 0 {
                i += 1  // whitespace
                continue
            }
            var piece = String.UnicodeScalarView()
            piece.append(contentsOf: s[i..<(i + length)])
            pieces.append(String(piece))
            i += length
        }
        return pieces
    }

    private static func matchLength(_ s: [Unicode.Scalar], at i: Int) -> Int {
        for literal in specialScalars + contractionScalars where hasPrefix(s, literal, at: i) {
            return literal.count
        }
        if isLetter(s[i]) { return runLength(s, from: i, where: isLetter) }
        if isNumber(s[i]) { return 1 }
        if !s[i].properties.isWhitespace {
            return runLength(s, from: i) { !isLetter($0) && !isNumber($0) && !$0.properties.isWhitespace }
        }
        return 0
    }

    private static func hasPrefix(_ s: [Unicode.Scalar], _ literal: [Unicode.Scalar], at i: Int) -> Bool {
        guard i + literal.count <= s.count else { return false }
        return zip(s[i...], literal).allSatisfy { $0 == $1 }
    }

    private static func runLength(_ s: [Unicode.Scalar], from i: Int, where predicate: (Unicode.Scalar) -> Bool) -> Int {
        var j = i
        while j < s.count, predicate(s[j]) { j += 1 }
        return j - i
    }

    static func isLetter(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return true
        default:
            return false
        }
    }

    static func isNumber(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber:
            return true
        default:
            return false
        }
    }
}
