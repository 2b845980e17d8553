import Foundation

/// Text normalization applied before CLIP tokenization.
///
/// The reference tokenizer runs `ftfy.fix_text`, unescapes HTML twice, collapses whitespace and
/// lowercases. ftfy is a large heuristic library; this reimplements the parts of it that change
/// the token ids of realistic prompts (checked against the shared tokenizer goldens): UTF-8 read
/// as Latin-1/Windows-1252 ("mojibake"), Latin ligatures, full-width forms, curly quotes,
/// stray control characters, NFC, and the common HTML entities.
public enum TextCleaner {
    /// Full cleanup: the string the pre-tokenizer sees.
    public static func clean(_ text: String) -> String {
        var s = unescapeHTML(text)
        s = fixMojibake(s)
        s = mapScalars(s)
        s = s.precomposedStringWithCanonicalMapping
        s = unescapeHTML(unescapeHTML(s))
        return collapseWhitespace(s).lowercased()
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

    private static func mapScalars(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            let v = scalar.value
            if isRemovedControl(v) { continue }
            switch v {
            case 0x02BC, 0x2018...0x201B:
                out.append("'")
            case 0x201C...0x201F:
                out.append("\"")
            case 0x3000:
                out.append(" ")
            case 0x0132, 0x0133, 0x0149, 0x01C4...0x01CC, 0x01F1...0x01F3, 0xFB00...0xFB06, 0xFF01...0xFFEF:
                // Ligatures and half/full-width forms: their compatibility decomposition is the fix.
                out.append(contentsOf: String(scalar).precomposedStringWithCompatibilityMapping.unicodeScalars)
            default:
                out.append(scalar)
            }
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

    private static let namedEntities: [String: String] = [
        "amp": "&", "lt": "<", "gt": ">", "quot": "\"", "apos": "'", "nbsp": "\u{00A0}",
    ]

    /// Replaces `&name;`, `&#NNN;` and `&#xHH;` entities; unknown entities are kept verbatim.
    public static func unescapeHTML(_ text: String) -> String {
        guard text.contains("&") else { return text }
        var out = ""
        var rest = text[...]
        while let amp = rest.firstIndex(of: "&") {
            out += rest[..<amp]
            let afterAmp = rest.index(after: amp)
            if let semi = rest[afterAmp...].prefix(12).firstIndex(of: ";"),
               let replacement = entityValue(String(rest[afterAmp..<semi])) {
                out += replacement
                rest = rest[rest.index(after: semi)...]
            } else {
                out += "&"
                rest = rest[afterAmp...]
            }
        }
        out += rest
        return out
    }

    private static func entityValue(_ name: String) -> String? {
        if let named = namedEntities[name] { return named }
        guard name.hasPrefix("#") else { return nil }
        let digits = name.dropFirst()
        let code: UInt32?
        if digits.hasPrefix("x") || digits.hasPrefix("X") {
            code = UInt32(digits.dropFirst(), radix: 16)
        } else {
            code = UInt32(digits, radix: 10)
        }
        guard let code, let scalar = Unicode.Scalar(code) else { return nil }
        return String(scalar)
    }
}
