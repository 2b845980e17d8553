import Foundation

/// Text normalization applied before CLIP tokenization.
///
/// The reference tokenizer runs `ftfy.fix_text`, unescapes HTML twice, collapses whitespace and
/// lowercases. ftfy is a large heuristic library; this reimplements the parts of it that change
/// the token ids of realistic prompts (checked against the shared tokenizer goldens): UTF-8 read
/// as Latin-1/Windows-1252 ("mojibake"), Latin ligatures, full-width forms, curly quotes,
/// stray control characters and NFC. HTML entities are decoded exactly as Python does, over the
/// full HTML5 table (`HTMLEntities`).
public enum TextCleaner {
    /// Full cleanup: the string the pre-tokenizer sees.
    public static func clean(_ text: String) -> String {
        let s = unescapeHTML(unescapeHTML(fixText(text)))
        return collapseWhitespace(s).lowercased()
    }

    /// ftfy's `fix_text`: each line (with its line break) is fixed on its own. ftfy repeats its
    /// fixes until nothing changes, which decodes nested escapes ("&amp;amp;amp;" → "&"); here
    /// only text that still holds an "&" is passed again, since repeating the mojibake repair
    /// alone makes it more eager than ftfy's heuristics (checked on random mojibake). Like ftfy,
    /// HTML is not unescaped from the first line that contains "<" on (probably markup).
    static func fixText(_ text: String) -> String {
        let scalars = text.unicodeScalars
        var out = ""
        var unescapingHTML = true
        var start = scalars.startIndex
        while start < scalars.endIndex {
            let end = scalars[start...].firstIndex(of: "\n").map(scalars.index(after:)) ?? scalars.endIndex
            let line = String(scalars[start..<end])
            if line.unicodeScalars.contains("<") { unescapingHTML = false }
            out += fixLine(line, unescapingHTML: unescapingHTML)
            start = end
        }
        return out
    }

    private static func fixLine(_ text: String, unescapingHTML: Bool) -> String {
        var s = text
        while true {
            let before = s
            if unescapingHTML { s = HTMLEntities.bundled.unescapeStrict(s) }
            s = removeTerminalEscapes(s)
            s = fixMojibake(s)
            s = mapScalars(s)
            s = s.precomposedStringWithCanonicalMapping
            // Scalar-wise: String's == treats canonically equivalent text as equal.
            let changed = !s.unicodeScalars.elementsEqual(before.unicodeScalars)
            if !(changed && unescapingHTML && s.unicodeScalars.contains("&")) { return s }
        }
    }

    /// Runs of Unicode whitespace become one space; leading and trailing whitespace is dropped.
    public static func collapseWhitespace(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        var pendingSpace = false
        for scalar in text.unicodeScalars {
            if scalar.properties.isWhitespace {
                pendingSpace = !out.isEmpty
                continue
            }
            if pendingSpace {
                out.append(" ")
                pendingSpace = false
            }
            out.append(scalar)
        }
        return String(out)
    }

    // MARK: - Per-scalar fixes (ligatures, widths, quotes, control characters)

    /// Ligatures and width forms are expanded first so that quotes they produce are uncurled too
    /// (ftfy turns "ŉ" into "'n").
    private static func mapScalars(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars.flatMap(expand) {
            let v = scalar.value
            if isRemovedControl(v) { continue }
            switch v {
            case 0x02BC, 0x2018...0x201B:
                out.append("'")
            case 0x201C...0x201F:
                out.append("\"")
            default:
                out.append(scalar)
            }
        }
        return String(out)
    }

    private static func expand(_ scalar: Unicode.Scalar) -> [Unicode.Scalar] {
        switch scalar.value {
        case 0x0080...0x009F:
            // C1 controls are almost always Windows-1252 bytes decoded as Latin-1.
            if let fixed = cp1252Specials.first(where: { $0.value == UInt8(scalar.value) })?.key {
                return [Unicode.Scalar(fixed)!]
            }
            return [scalar]
        case 0x3000:
            return [" "]
        case 0xFB05:
            return ["\u{017F}", "t"]  // ftfy keeps the long s, NFKC would not
        case 0x0132, 0x0133, 0x0149, 0x01C4...0x01CC, 0x01F1...0x01F3, 0xFB00...0xFB06, 0xFF01...0xFFEF:
            // Ligatures and half/full-width forms: their compatibility decomposition is the fix.
            return Array(String(scalar).precomposedStringWithCompatibilityMapping.unicodeScalars)
        default:
            return [scalar]
        }
    }

    /// ANSI terminal escapes such as "\u{1B}[31m" (colour codes pasted from a shell).
    private static func removeTerminalEscapes(_ text: String) -> String {
        guard text.unicodeScalars.contains("\u{1B}") else { return text }
        let scalars = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        while i < scalars.count {
            if scalars[i] == "\u{1B}", i + 1 < scalars.count, scalars[i + 1] == "[" {
                var j = i + 2
                while j < scalars.count, scalars[j] == ";" || ("0"..."9").contains(scalars[j]) { j += 1 }
                if j < scalars.count, ("a"..."z").contains(scalars[j]) || ("A"..."Z").contains(scalars[j]) {
                    i = j + 1
                    continue
                }
            }
            out.append(scalars[i])
            i += 1
        }
        return String(out)
    }

    /// C0 controls other than tab/newline/CR/form feed, DEL, deprecated format characters,
    /// the byte-order mark and interlinear annotation marks carry no text.
    private static func isRemovedControl(_ v: UInt32) -> Bool {
        switch v {
        case 0x00...0x08, 0x0B, 0x0E...0x1F, 0x7F, 0x206A...0x206F, 0xFEFF, 0xFFF9...0xFFFC:
            return true
        default:
            return false
        }
    }

    // MARK: - Mojibake

    /// Windows-1252 bytes 0x80...0x9F that decode to characters outside Latin-1.
    private static let cp1252Specials: [UInt32: UInt8] = [
        0x20AC: 0x80, 0x201A: 0x82, 0x0192: 0x83, 0x201E: 0x84, 0x2026: 0x85, 0x2020: 0x86,
        0x2021: 0x87, 0x02C6: 0x88, 0x2030: 0x89, 0x0160: 0x8A, 0x2039: 0x8B, 0x0152: 0x8C,
        0x017D: 0x8E, 0x2018: 0x91, 0x2019: 0x92, 0x201C: 0x93, 0x201D: 0x94, 0x2022: 0x95,
        0x2013: 0x96, 0x2014: 0x97, 0x02DC: 0x98, 0x2122: 0x99, 0x0161: 0x9A, 0x203A: 0x9B,
        0x0153: 0x9C, 0x017E: 0x9E, 0x0178: 0x9F,
    ]

    /// The byte a scalar came from if UTF-8 text was wrongly decoded as Latin-1 or Windows-1252.
    private static func mojibakeByte(_ scalar: Unicode.Scalar) -> UInt8? {
        let v = scalar.value
        if v < 0x100 { return UInt8(v) }
        return cp1252Specials[v]
    }

    /// Re-decodes runs like "Ã©" (the UTF-8 bytes of "é" shown as Latin-1) back to "é".
    ///
    /// Only complete, valid multi-byte UTF-8 sequences are replaced, so ordinary accented text
    /// ("café", "über") is left alone.
    public static func fixMojibake(_ text: String) -> String {
        let scalars = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        while i < scalars.count {
            if let decoded = decodeSequence(scalars, at: i) {
                out.append(decoded.scalar)
                i += decoded.length
            } else {
                out.append(scalars[i])
                i += 1
            }
        }
        return String(out)
    }

    private static func decodeSequence(_ scalars: [Unicode.Scalar], at start: Int) -> (scalar: Unicode.Scalar, length: Int)? {
        guard let lead = mojibakeByte(scalars[start]) else { return nil }
        let length: Int
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0...0xEF: length = 3
        case 0xF0...0xF4: length = 4
        default: return nil
        }
        guard start + length <= scalars.count else { return nil }
        var bytes = [lead]
        for k in 1..<length {
            guard let b = mojibakeByte(scalars[start + k]), (0x80...0xBF).contains(b) else { return nil }
            bytes.append(b)
        }
        guard let decoded = String(validating: bytes, as: UTF8.self),
              decoded.unicodeScalars.count == 1,
              let scalar = decoded.unicodeScalars.first else { return nil }
        return (scalar, length)
    }

    // MARK: - HTML entities

    /// Python's `html.unescape` over the full HTML5 table (see `HTMLEntities`).
    public static func unescapeHTML(_ text: String) -> String {
        HTMLEntities.bundled.unescape(text)
    }
}
