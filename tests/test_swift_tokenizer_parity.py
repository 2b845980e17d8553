"""The Swift tokenizer (apps/ios, `mobileclip-tokenize`) gives the same ids as the Python one.

Builds the Swift tool with SwiftPM, so it needs `swift` on PATH (skipped otherwise) and takes about
a minute from a clean build; it is deliberately not marked slow so CI runs it. HTML entities are
compared for every HTML5 name (about 12,000 short lines, a few seconds); the check that the shipped
entity table is current needs no Swift.
"""

from __future__ import annotations

import html.entities
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mobileclip_deploy import tokenize

PACKAGE = Path(__file__).resolve().parents[1] / "apps" / "ios"
ENTITY_GENERATOR = PACKAGE / "Scripts" / "generate_html_entities.py"

# Beyond the goldens: case, punctuation runs, contractions, digits, accents, emoji, entities.
OWN_STRINGS = [
    "a photo of a dog.",
    "A Photo Of The GOLDEN Retriever!!!",
    "don't stop-believin' ... it'll be fine'd",
    "room 101, floor 3½, ⅔ done",
    "Ελληνικά και العربية و हिन्दी",
    "👩‍👩‍👧 family · ✨ sparkle ✨",
    "caf&eacute; &amp;amp; &#x263A; smile",
    "&eacutecole &ampx &aposx",
    "ﬀ ﬃ ﬅ ﬆ ŉ",
    "\x1b[31mred\x1b[0m and \x85 and \x81",
    "Â¿QuÃ© tal? â€œquotedâ€\x9d",
    "tab\tseparated   words",
    # HTML entities as html.unescape and ftfy read them: capitals, no ";", longest legacy prefix,
    # numeric with the standard's replacements, nested escapes, and "<" switching ftfy's pass off.
    "&AMP; &LT;b&GT; &QUOT;hi&QUOT; &COPY &EACUTE; &SZLIG; &NTILDE; &nTILDE; &Ntilde;",
    "&notin &notit; &amp,x &ampé &lt3 &copy2024 &Jscr;ohn &HilbertSpace; &NotEqualTilde;",
    "&#x80;&#x81;&#x9F;&#0;&#13;&#1;&#x7F;&#xFDD0;&#xFFFE;&#x10FFFF;&#xD800;&#x110000;&#99999999999999999999;",
    "&#65&#x42&#X43; &#x263a; &#x; &#; &# &#12ab; &#59; &#38;#38;#38;65;",
    "&amp;amp;amp;amp;amp; &amp;lt;b&amp;gt; &AMP;amp;",
    "<b> &amp;amp;amp; &EACUTE; &eacute;</b>",
    "&amp\u0301 &\u212aopf; &ab&cd; &;amp; & amp;",
    "x" * 300,
]


@pytest.fixture(scope="module")
def swift_tokenizer() -> Path:
    if shutil.which("swift") is None:
        pytest.skip("swift is not on PATH (the Swift package needs a Swift toolchain)")
    build = ["swift", "build", "--package-path", str(PACKAGE), "--product", "mobileclip-tokenize"]
    subprocess.run(build, check=True, capture_output=True, text=True, timeout=1800)
    bin_dir = subprocess.run(
        ["swift", "build", "--package-path", str(PACKAGE), "--show-bin-path"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout.strip()
    return Path(bin_dir) / "mobileclip-tokenize"


def run_swift(binary: Path, texts: list[str]) -> list[list[int]]:
    # The tool reads one text per line, so texts with line breaks cannot be sent.
    assert not any("\n" in t or "\r" in t for t in texts)
    out = subprocess.run(
        [str(binary)], input="".join(t + "\n" for t in texts), check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_swift_matches_python_tokenizer(swift_tokenizer: Path, shared_dir: Path) -> None:
    golden = json.loads((shared_dir / "reference" / "goldens" / "tokenizer_cases.json").read_text())
    cases = [c for c in golden["cases"] if "\n" not in c["text"] and "\r" not in c["text"]]
    texts = [c["text"] for c in cases[:40]] + OWN_STRINGS

    swift_ids = run_swift(swift_tokenizer, texts)
    python_ids = tokenize(texts).tolist()

    assert len(swift_ids) == len(texts)
    assert all(len(ids) == 77 for ids in swift_ids)
    mismatches = [(t, s[:20], p[:20]) for t, s, p in zip(texts, swift_ids, python_ids) if s != p]
    assert not mismatches, f"{len(mismatches)} texts differ (text, swift, python): {mismatches[:3]}"
    # Both also agree with the reference ids where those exist.
    assert swift_ids[: len(cases[:40])] == [c["ids"] for c in cases[:40]]


def test_swift_tool_prints_compact_json(swift_tokenizer: Path) -> None:
    out = subprocess.run(
        [str(swift_tokenizer)], input="a photo of a dog.\n", check=True, capture_output=True, text=True, timeout=60
    ).stdout
    assert out == "[" + ",".join(map(str, [49406, 320, 1125, 539, 320, 1929, 269, 49407] + [0] * 69)) + "]\n"


def _entity_cases() -> list[str]:
    """Every HTML5 name as written, in capitals, bare and followed by text, after "<"; numeric edges."""
    cases = []
    for name in sorted(html.entities.html5):
        bare = name.rstrip(";")
        cases += [f"&{name}", f"&{name.upper()}", f"&{bare.upper()};", f"x&{bare}y;z", f"<&{name}"]
    codes = [*range(0xA1), 0xD7FF, 0xD800, 0xDFFF, 0xE000, 0xFDCF, 0xFDD0, 0xFDEF, 0xFDF0, 0x10FFFF, 0x110000, 10**30]
    codes += [plane << 16 | low for plane in range(17) for low in (0xFFFD, 0xFFFE, 0xFFFF)]
    for code in codes:
        cases += [f"&#{code};", f"&#x{code:X};", f"&#X{code:x}z", f"&#{code}a", f"<&#{code};"]
    return cases


def test_swift_matches_python_on_every_html5_entity(swift_tokenizer: Path) -> None:
    texts = _entity_cases()
    swift_ids = run_swift(swift_tokenizer, texts)
    python_ids = tokenize(texts).tolist()
    assert len(swift_ids) == len(texts)
    mismatches = [(t, s[:12], p[:12]) for t, s, p in zip(texts, swift_ids, python_ids) if s != p]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ (text, swift, python): {mismatches[:5]}"


def test_shipped_html_entities_match_python_table() -> None:
    """The resource is what the generator makes from Python's table now: rerun it when this fails."""
    spec = importlib.util.spec_from_file_location("generate_html_entities", ENTITY_GENERATOR)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    shipped = generator.RESOURCE.read_text(encoding="utf-8")
    assert shipped == generator.render(), f"{generator.RESOURCE} is stale: run python {ENTITY_GENERATOR}"
    named = [line.split(" ") for line in shipped.splitlines() if line.startswith("named ")]
    assert len(named) == len(html.entities.html5) == 2231
    decoded = {name: "".join(chr(int(c, 16)) for c in codes) for _, name, *codes in named}
    assert decoded == html.entities.html5
