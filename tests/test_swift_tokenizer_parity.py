"""The Swift tokenizer (apps/ios, `mobileclip-tokenize`) gives the same ids as the Python one.

Builds the Swift tool with SwiftPM, so it needs `swift` on PATH (skipped otherwise) and takes about
a minute from a clean build; it is deliberately not marked slow so CI runs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mobileclip_deploy import tokenize

PACKAGE = Path(__file__).resolve().parents[1] / "apps" / "ios"

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
