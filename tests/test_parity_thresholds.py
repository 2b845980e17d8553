"""The parity thresholds by behaviour: an artifact whose outputs sit just below its precision class's minimum cosine
is refused (not written, not in the manifest), one just above it is kept; `--threshold CLASS=COSINE` moves only
that class's line."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import Recording, entries, export, registered

from mobileclip_deploy.exporters.schemes import FP16, FP32, Scheme

pytestmark = pytest.mark.usefixtures("one_thread")

# The defaults `export --help` documents: minimum cosine to the folded PyTorch model by weight bits.
DOCUMENTED = {"fp32": 0.99999, "fp16": 0.999, "w8": 0.99, "w6": 0.99, "w4": 0.98}


# The gate's other limits, opened as far as `--threshold CLASS.METRIC` allows: these tests move only the minimum
# cosine (the rotation below also moves the centered metrics, which verify/gate.py's own tests cover).
OTHERS = {f"{c}.{m}": (1e-6 if m == "psnr_db" else 1e-9) for c in ("fp32", "fp16", "8bit", "4bit")
          for m in ("psnr_db", "centered_cosine", "top1_agreement", "rank_correlation") if not (m == "psnr_db" and c != "fp32")}


def at_cosine(out: np.ndarray, cosine: float) -> np.ndarray:
    """`out` with each row turned away from itself so that its cosine to the original is exactly `cosine`."""
    out = out.astype(np.float64)
    other = np.roll(out, 1, axis=1)  # a direction per row, made orthogonal to the row below
    other -= (other * out).sum(1, keepdims=True) / (out * out).sum(1, keepdims=True) * out
    other *= np.linalg.norm(out, axis=1, keepdims=True) / np.linalg.norm(other, axis=1, keepdims=True)
    return (out + np.tan(np.arccos(cosine)) * other).astype(np.float32)


def graded(offset: float) -> type[Recording]:
    """A test backend whose runtime's outputs sit at (its class's documented threshold + `offset` x (1 - it))."""

    class Graded(Recording):
        schemes = (FP32, FP16, Scheme("w8", 8), Scheme("w6", 6), Scheme("w4", 4))

        def check(self, build, path, handle):
            name, out, facts = super().check(build, path, handle)
            threshold = DOCUMENTED[build.scheme.name]
            return name, at_cosine(out, threshold + offset * (1 - threshold)), facts

    return Graded


@pytest.mark.parametrize("offset, kept", [(-0.2, False), (0.2, True)])
def test_each_class_keeps_what_reaches_its_threshold(tmp_path, offset: float, kept: bool) -> None:
    out = tmp_path / "out"
    with registered(graded(offset)):
        results = export(out, [f"test-recording:{s}" for s in DOCUMENTED], towers=("text",), thresholds=OTHERS)
    assert [r.status == "ok" for r in results] == [kept] * len(DOCUMENTED), [r.message for r in results]
    assert all((out / r.file).exists() == kept for r in results)
    if kept:
        for entry in entries(out).values():
            documented = DOCUMENTED[entry["scheme"]]
            assert entry["parity"]["min_cosine"] == pytest.approx(documented + 0.2 * (1 - documented), abs=1e-7)
    else:
        assert all("parity failed" in r.message for r in results)


def test_a_threshold_option_moves_only_its_class(tmp_path) -> None:
    with registered(graded(0.2)):
        results = export(tmp_path / "out", [f"test-recording:{s}" for s in DOCUMENTED], towers=("text",),
                         thresholds={**OTHERS, "8bit": 0.995})
    assert {r.file.split("_")[-1].split(".")[0]: r.status for r in results} == {
        "fp32": "ok", "fp16": "ok", "w8": "failed", "w6": "failed", "w4": "ok"}


def test_at_cosine_gives_the_cosine_asked() -> None:
    rows = np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)
    moved = at_cosine(rows, 0.99999).astype(np.float64)
    cos = (moved * rows).sum(1) / np.linalg.norm(moved, axis=1) / np.linalg.norm(rows, axis=1)
    assert np.abs(cos - 0.99999).max() < 2e-7


def test_a_changed_gate_limit_judges_again_instead_of_reusing(tmp_path) -> None:
    """A cached artifact passed under the limits it was judged by: a stricter `CLASS.METRIC` limit re-exports and
    re-judges that class (here it now fails); the other classes are reused."""
    quants = ["test-recording:fp32", "test-recording:fp16"]
    with registered(graded(0.2)):
        first = export(tmp_path / "out", quants, towers=("text",), thresholds=OTHERS)
        again = export(tmp_path / "out", quants, towers=("text",), thresholds=OTHERS)
        stricter = export(tmp_path / "out", quants, towers=("text",),
                          thresholds={**OTHERS, "fp16.centered_cosine": 1.0})
    assert [r.status for r in first] == ["ok", "ok"] and [r.status for r in again] == ["cached", "cached"]
    assert [r.status for r in stricter] == ["cached", "failed"]
    assert "centered_cosine" in stricter[1].message
