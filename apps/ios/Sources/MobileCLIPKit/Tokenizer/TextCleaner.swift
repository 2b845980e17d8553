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
        s = removeTerminalEscapes(s)
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

    /// HTML's markup and Latin-1 entities plus the common typographic ones. Python's
    /// `html.unescape` knows all 2,231 HTML5 names; rarer ones stay verbatim here.
    private static let namedEntities: [String: UInt32] = [
        "amp": 0x0026, "lt": 0x003C, "gt": 0x003E, "quot": 0x0022, "apos": 0x0027, "nbsp": 0x00A0,
        "iexcl": 0x00A1, "cent": 0x00A2, "pound": 0x00A3, "curren": 0x00A4, "yen": 0x00A5,
        "brvbar": 0x00A6, "sect": 0x00A7, "uml": 0x00A8, "copy": 0x00A9, "ordf": 0x00AA, "laquo": 0x00AB,
        "not": 0x00AC, "shy": 0x00AD, "reg": 0x00AE, "macr": 0x00AF, "deg": 0x00B0, "plusmn": 0x00B1,
        "sup2": 0x00B2, "sup3": 0x00B3, "acute": 0x00B4, "micro": 0x00B5, "para": 0x00B6, "middot": 0x00B7,
        "cedil": 0x00B8, "sup1": 0x00B9, "ordm": 0x00BA, "raquo": 0x00BB, "frac14": 0x00BC,
        "frac12": 0x00BD, "frac34": 0x00BE, "iquest": 0x00BF, "Agrave": 0x00C0, "Aacute": 0x00C1,
        "Acirc": 0x00C2, "Atilde": 0x00C3, "Auml": 0x00C4, "Aring": 0x00C5, "AElig": 0x00C6,
        "Ccedil": 0x00C7, "Egrave": 0x00C8, "Eacute": 0x00C9, "Ecirc": 0x00CA, "Euml": 0x00CB,
        "Igrave": 0x00CC, "Iacute": 0x00CD, "Icirc": 0x00CE, "Iuml": 0x00CF, "ETH": 0x00D0,
        "Ntilde": 0x00D1, "Ograve": 0x00D2, "Oacute": 0x00D3, "Ocirc": 0x00D4, "Otilde": 0x00D5,
        "Ouml": 0x00D6, "times": 0x00D7, "Oslash": 0x00D8, "Ugrave": 0x00D9, "Uacute": 0x00DA,
        "Ucirc": 0x00DB, "Uuml": 0x00DC, "Yacute": 0x00DD, "THORN": 0x00DE, "szlig": 0x00DF,
        "agrave": 0x00E0, "aacute": 0x00E1, "acirc": 0x00E2, "atilde": 0x00E3, "auml": 0x00E4,
        "aring": 0x00E5, "aelig": 0x00E6, "ccedil": 0x00E7, "egrave": 0x00E8, "eacute": 0x00E9,
        "ecirc": 0x00EA, "euml": 0x00EB, "igrave": 0x00EC, "iacute": 0x00ED, "icirc": 0x00EE,
        "iuml": 0x00EF, "eth": 0x00F0, "ntilde": 0x00F1, "ograve": 0x00F2, "oacute": 0x00F3,
        "ocirc": 0x00F4, "otilde": 0x00F5, "ouml": 0x00F6, "divide": 0x00F7, "oslash": 0x00F8,
        "ugrave": 0x00F9, "uacute": 0x00FA, "ucirc": 0x00FB, "uuml": 0x00FC, "yacute": 0x00FD,
        "thorn": 0x00FE, "yuml": 0x00FF, "OElig": 0x0152, "oelig": 0x0153, "Scaron": 0x0160,
        "scaron": 0x0161, "Yuml": 0x0178, "fnof": 0x0192, "circ": 0x02C6, "tilde": 0x02DC, "ndash": 0x2013,
        "mdash": 0x2014, "lsquo": 0x2018, "rsquo": 0x2019, "sbquo": 0x201A, "ldquo": 0x201C,
        "rdquo": 0x201D, "bdquo": 0x201E, "dagger": 0x2020, "Dagger": 0x2021, "bull": 0x2022,
        "hellip": 0x2026, "permil": 0x2030, "lsaquo": 0x2039, "rsaquo": 0x203A, "euro": 0x20AC,
        "trade": 0x2122,
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
            } else if let (length, replacement) = legacyEntity(rest[afterAmp...]) {
                out += replacement
                rest = rest[rest.index(afterAmp, offsetBy: length)...]
            } else {
                out += "&"
                rest = rest[afterAmp...]
            }
        }
        out += rest
        return out
    }

    /// HTML also accepts the HTML 4 / Latin-1 names without ";" ("&amp", "&eacute"); the longest
    /// such name at the start of `text` wins, as in Python's `html.unescape`.
    private static func legacyEntity(_ text: Substring) -> (length: Int, replacement: String)? {
        let letters = text.prefix(8).prefix { $0.isASCII && ($0.isLetter || $0.isNumber) }
        for length in stride(from: letters.count, through: 2, by: -1) {
            let name = String(letters.prefix(length))
            if let code = namedEntities[name], code <= 0xFF, name != "apos", let scalar = Unicode.Scalar(code) {
                return (length, String(scalar))
            }
        }
        return nil
    }

    private static func entityValue(_ name: String) -> String? {
        if let named = namedEntities[name], let scalar = Unicode.Scalar(named) { return String(scalar) }
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
