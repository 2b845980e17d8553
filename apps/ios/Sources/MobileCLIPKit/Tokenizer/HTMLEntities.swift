import Foundation

/// HTML character references decoded exactly as the Python tokenizer decodes them.
///
/// The reference tokenizer runs ftfy (whose `unescape_html` decodes `&name;` and `&#N;` plus
/// all-caps forms such as `&EACUTE;`) and then Python's `html.unescape` twice, which also takes
/// the legacy names without ";" (longest match: "&notit" is "¬it") and the standard's replacements
/// for numeric references ("&#x80;" is "€", "&#0;" is U+FFFD). Both use the WHATWG table of 2,231
/// names; it ships as `html_entities.txt`, generated from Python's copy by
/// `Scripts/generate_html_entities.py`, so the names here are the standard's, not a hand-picked few.
public struct HTMLEntities: Sendable {
    /// Name (with its ";" where the table has one) → replacement, e.g. "amp;" → "&", "amp" → "&".
    public let named: [String: String]
    /// Numeric references the standard maps elsewhere (0x80 → "€", 0x0D → "\r", 0 → U+FFFD).
    public let numericReplacements: [UInt32: String]
    /// Code points a numeric reference yields nothing for (C0/C1 controls, non-characters).
    public let droppedCodePoints: Set<UInt32>
    /// ftfy's stricter table: the names ending in ";" plus upper-cased forms of the lower-case
    /// ones that do not already mean something else ("EACUTE;" → "É", "SZLIG;" → "SS").
    private(set) var strictNamed: [String: String] = [:]

    /// `html.unescape` reads at most 32 name characters (the longest name, with its ";").
    private static let maxNameLength = 32
    /// ftfy only considers `&#?[0-9A-Za-z]{1,24};`.
    private static let maxStrictLength = 24

    /// The table shipped in the package. It is part of the build, so failing to read it is a
    /// broken package rather than a recoverable error.
    public static let bundled: HTMLEntities = {
        do {
            guard let url = Bundle.module.url(forResource: "html_entities", withExtension: "txt") else {
                throw MobileCLIPError.missingFile("html_entities.txt in the MobileCLIPKit bundle")
            }
            return try HTMLEntities(table: String(contentsOf: url, encoding: .utf8))
        } catch {
            preconditionFailure("MobileCLIPKit: \(error)")
        }
    }()

    /// Parses the generated table (see the header of `html_entities.txt` for its lines).
    public init(table: String) throws {
        var named: [String: String] = [:]
        var replacements: [UInt32: String] = [:]
        var dropped: Set<UInt32> = []
        let lines = table.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
        for (number, line) in lines where !line.isEmpty && !line.hasPrefix("#") {
            let fields = line.split(separator: " ")
            let bad = MobileCLIPError.invalidData("html_entities.txt line \(number + 1): \(line)")
            guard fields.count >= (fields[0] == "drop" ? 2 : 3) else { throw bad }
            let scalars = fields.dropFirst(2).map { UInt32($0, radix: 16).flatMap(Unicode.Scalar.init) }
            guard !scalars.contains(where: { $0 == nil }) else { throw bad }
            var value = String.UnicodeScalarView()
            value.append(contentsOf: scalars.compactMap { $0 })
            switch fields[0] {
            case "named":
                named[String(fields[1])] = String(value)
            case "replace":
                guard let code = UInt32(fields[1], radix: 16) else { throw bad }
                replacements[code] = String(value)
            case "drop":
                guard let code = UInt32(fields[1], radix: 16), fields.count == 2 else { throw bad }
                dropped.insert(code)
            default:
                throw bad
            }
        }
        guard !named.isEmpty else { throw MobileCLIPError.invalidData("html_entities.txt names no entities") }
        self.named = named
        self.numericReplacements = replacements
        self.droppedCodePoints = dropped
        strictNamed = makeStrictTable()  // built with `unescape`, so only once the rest is set
    }

    /// ftfy's `_build_html_entities`, applied to this table.
    private func makeStrictTable() -> [String: String] {
        var table: [String: String] = [:]
        for (name, value) in named where name.hasSuffix(";") {
            table[name] = value
            guard name == name.lowercased() else { continue }
            let upper = name.uppercased()
            if unescape("&" + upper) == "&" + upper {
                table[upper] = value.uppercased()
            }
        }
        return table
    }

    // MARK: - html.unescape

    /// Python's `html.unescape`: every `&...` that the standard reads as a reference is replaced;
    /// anything else stays as written.
    public func unescape(_ text: String) -> String {
        Self.replacingReferences(in: text, reference)
    }

    /// Copies `text`, replacing each "&" where `match` finds a reference (replacement and the
    /// index after it) and resuming after it, as Python's non-overlapping `re.sub` does.
    private static func replacingReferences(
        in text: String, _ match: ([Unicode.Scalar], Int) -> (String, Int)?
    ) -> String {
        guard text.unicodeScalars.contains("&") else { return text }
        let scalars = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        while i < scalars.count {
            if scalars[i] == "&", let (replacement, end) = match(scalars, i) {
                out.append(contentsOf: replacement.unicodeScalars)
                i = end
            } else {
                out.append(scalars[i])
                i += 1
            }
        }
        return String(out)
    }

    /// The replacement for the reference starting at `amp` and the index after it, or nil where
    /// Python's pattern `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)` does not match.
    private func reference(_ s: [Unicode.Scalar], _ amp: Int) -> (String, Int)? {
        var j = amp + 1
        guard j < s.count else { return nil }
        if s[j] == "#" {
            j += 1
            var radix: UInt32 = 10
            if j + 1 < s.count, s[j] == "x" || s[j] == "X", s[j + 1].properties.isASCIIHexDigit {
                radix = 16
                j += 1
            }
            let digitsStart = j
            var code: UInt32 = 0
            while j < s.count, let digit = Self.digit(s[j], radix: radix) {
                code = min(code * radix + digit, 0x11_0000)  // saturates: anything larger is invalid alike
                j += 1
            }
            guard j > digitsStart else { return nil }
            if j < s.count, s[j] == ";" { j += 1 }
            return (numeric(code), j)
        }
        let nameStart = j
        while j < s.count, j - nameStart < Self.maxNameLength, !Self.endsName(s[j]) { j += 1 }
        guard j > nameStart else { return nil }
        if j < s.count, s[j] == ";" { j += 1 }
        let name = s[nameStart..<j]
        if let value = lookup(name) { return (value, j) }
        // The longest name the text starts with (only the legacy names can match without ";").
        for length in stride(from: name.count - 1, through: 2, by: -1) {
            if let value = lookup(name.prefix(length)) {
                var rest = String.UnicodeScalarView()
                rest.append(contentsOf: name.dropFirst(length))
                return (value + String(rest), j)
            }
        }
        return nil
    }

    /// Table names are ASCII; comparing scalars first keeps Swift's canonical-equivalence string
    /// comparison from matching e.g. "&\u{212A}opf;" (KELVIN SIGN) to "Kopf;" as Python would not.
    private func lookup(_ name: ArraySlice<Unicode.Scalar>) -> String? {
        guard name.allSatisfy(\.isASCII) else { return nil }
        var key = String.UnicodeScalarView()
        key.append(contentsOf: name)
        return named[String(key)]
    }

    private func numeric(_ code: UInt32) -> String {
        if let replacement = numericReplacements[code] { return replacement }
        if (0xD800...0xDFFF).contains(code) || code > 0x10FFFF { return "\u{FFFD}" }
        if droppedCodePoints.contains(code) { return "" }
        return Unicode.Scalar(code).map(String.init) ?? "\u{FFFD}"
    }

    private static func digit(_ scalar: Unicode.Scalar, radix: UInt32) -> UInt32? {
        guard scalar.isASCII, let value = Character(scalar).hexDigitValue, UInt32(value) < radix else { return nil }
        return UInt32(value)
    }

    private static func endsName(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "\t", "\n", "\u{0C}", " ", "<", "&", "#", ";": return true
        default: return false
        }
    }

    // MARK: - ftfy.fixes.unescape_html

    /// ftfy's `unescape_html`: only `&name;` / `&#N;` forms of at most 24 ASCII letters or digits,
    /// including the all-caps names, so informal text like "this&not that" is left alone.
    public func unescapeStrict(_ text: String) -> String {
        Self.replacingReferences(in: text) { scalars, amp in
            guard let end = strictReferenceEnd(scalars, at: amp) else { return nil }
            var match = String.UnicodeScalarView()
            match.append(contentsOf: scalars[amp..<end])
            return (strictReplacement(String(match)), end)
        }
    }

    /// The end of a match of `&#?[0-9A-Za-z]{1,24};` at `amp`, or nil.
    private func strictReferenceEnd(_ s: [Unicode.Scalar], at amp: Int) -> Int? {
        var j = amp + 1
        if j < s.count, s[j] == "#" { j += 1 }
        let start = j
        while j < s.count, s[j].isASCII, s[j].properties.isAlphabetic || ("0"..."9").contains(s[j]) { j += 1 }
        guard (1...Self.maxStrictLength).contains(j - start), j < s.count, s[j] == ";" else { return nil }
        return j + 1
    }

    private func strictReplacement(_ match: String) -> String {
        if let value = strictNamed[String(match.dropFirst())] { return value }
        guard match.hasPrefix("&#") else { return match }
        // A numeric reference counts only if all of it was consumed ("&#12ab;" stays).
        let decoded = unescape(match)
        return decoded.unicodeScalars.contains(";") ? match : decoded
    }
}
