import XCTest
@testable import MobileCLIPKit

/// Expected values are what Python 3.11's `html.unescape`, `ftfy.fixes.unescape_html` and the
/// Python tokenizer's cleanup return for the same input (tests/test_swift_tokenizer_parity.py
/// compares every HTML5 name against Python directly).
final class HTMLEntitiesTests: XCTestCase {
    private let entities = HTMLEntities.bundled

    /// Scalar by scalar: String's == would accept a canonically equivalent result.
    private func check(_ cases: [(String, String)], _ transform: (String) -> String,
                       file: StaticString = #filePath, line: UInt = #line) {
        for (input, expected) in cases {
            let got = transform(input)
            XCTAssertTrue(got.unicodeScalars.elementsEqual(expected.unicodeScalars),
                          "\(input.debugDescription) → \(got.debugDescription), expected \(expected.debugDescription)",
                          file: file, line: line)
        }
    }

    func testBundledTableIsTheFullHTML5Table() {
        XCTAssertEqual(entities.named.count, 2231)
        XCTAssertEqual(entities.named.keys.filter { !$0.hasSuffix(";") }.count, 106)  // legacy bare names
        XCTAssertEqual(entities.named["AMP;"], "&")
        XCTAssertEqual(entities.named["NotEqualTilde;"], "\u{2242}\u{338}")
        XCTAssertEqual(entities.numericReplacements.count, 34)
        XCTAssertEqual(entities.droppedCodePoints.count, 126)
    }

    func testUnescapeMatchesPythonHTMLUnescape() {
        let cases: [(String, String)] = [
            ("&AMP; &LT;b&GT; &QUOT;", "& <b> \""),
            ("&notin &notit; &ampx &amp,x &eacutecole", "\u{AC}in \u{AC}it; &x &,x \u{E9}cole"),
            ("&EACUTE; &Eacute &eacute", "&EACUTE; \u{C9} \u{E9}"),
            ("&#x80;&#x9F;&#0;&#13;|&#1;&#x7F;&#xFDD0;&#x10FFFF;|&#xD800;&#x110000;&#99999999999999999999;",
             "\u{20AC}\u{178}\u{FFFD}\r||\u{FFFD}\u{FFFD}\u{FFFD}"),
            ("&#65&#x42&#X43; &#x; &#; &# &#12ab;", "ABC &#x; &#; &# \u{0C}ab;"),
            ("&amp;amp; &AMP;amp;", "&amp; &amp;"),
            ("&amp\u{301} &\u{212A}opf; &Kopf;", "&\u{301} &\u{212A}opf; \u{1D542}"),
            ("&NotEqualTilde; &Jscr;", "\u{2242}\u{338} \u{1D4A5}"),
        ]
        check(cases, entities.unescape)
    }

    func testStrictUnescapeMatchesFtfy() {
        let cases: [(String, String)] = [
            ("&AMP; &EACUTE; &SZLIG; &NTILDE; &nTILDE; &Ntilde;", "& \u{C9} SS \u{D1} &nTILDE; \u{D1}"),
            ("this&not that &not; &amp", "this&not that \u{AC} &amp"),
            ("&#65; &#12ab; &#59; &#x80;", "A &#12ab; &#59; \u{20AC}"),
            ("&HilbertSpace; &abcdefghijklmnopqrstuvwxy;", "\u{210B} &abcdefghijklmnopqrstuvwxy;"),
        ]
        check(cases, entities.unescapeStrict)
    }

    func testCleanDecodesNestedEscapesAndLeavesMarkupLinesToHTMLUnescape() {
        let cases: [(String, String)] = [
            ("&amp;amp;amp;amp;amp;", "&"),
            ("&#38;#38;#38;65;", "&65;"),
            ("BUNDESSTRA&SZLIG;E", "bundesstrasse"),
            // ftfy skips a line with "<" (and every later one); html.unescape then runs only twice.
            ("<b> &amp;amp;amp; &EACUTE;</b>", "<b> &amp; &eacute;</b>"),
            ("line &amp;amp;amp;\n<b> &amp;amp;amp;", "line & <b> &amp;"),
        ]
        check(cases, TextCleaner.clean)
    }

    func testMalformedTableIsRejected() {
        XCTAssertThrowsError(try HTMLEntities(table: "named amp 26\nbogus x 41\n"))
        XCTAssertThrowsError(try HTMLEntities(table: "named amp ZZ\n"))
        XCTAssertThrowsError(try HTMLEntities(table: "named amp\n"))
        XCTAssertThrowsError(try HTMLEntities(table: "named amp; 26\ndrop 1 2\n"))
        XCTAssertThrowsError(try HTMLEntities(table: "# only a comment\n"))
        XCTAssertEqual(try HTMLEntities(table: "named amp; 26\n").unescape("&amp;&AMP;"), "&&AMP;")
    }
}
