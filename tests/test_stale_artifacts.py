"""Nothing stale or altered is reused (issue 12, section 2, and the truncated-artifact cases of section 4).

Export caches key on the content of the photos they used; `bench`, `eval --artifacts` and `frontier` use an
artifact only if its sha256 matches its manifest entry; two exports into one folder take turns on a lock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import entries, export, export_folder
from helpers import refusal as refused
from PIL import Image
from tiny_artifacts import tiny_onnx, tiny_text_onnx

from mobileclip_deploy.atomic import locked_folder
from mobileclip_deploy.bench import artifacts, sweep
from mobileclip_deploy.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")
TESTS = Path(__file__).resolve().parent


def photos(folder: Path, seed: int, n: int = 4) -> Path:
    """`n` PNG photos named 0.png..; another seed gives other pictures under the same names."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


# ------------------------------------------------------------------------------------ export caches


def test_calibration_cache_keys_on_photo_content(tmp_path: Path) -> None:
    from helpers import registered

    out, calib = tmp_path / "out", photos(tmp_path / "calib", seed=0)
    run = lambda: export(out, ["test-recording:w8a8"], towers=("image",), calibration=calib, parity=False)  # noqa: E731
    with registered():
        assert [r.status for r in run()] == ["ok"]
        assert [r.status for r in run()] == ["cached"]
        [entry] = entries(out).values()
        photos(calib, seed=1)  # other photos, same names
        assert [r.status for r in run()] == ["ok"]
    [again] = entries(out).values()
    assert again["calibration_images"] == entry["calibration_images"] and again["cache_key"] != entry["cache_key"]
    assert again["details"]["calibration_sha256"] != entry["details"]["calibration_sha256"]


def test_fp32_exported_without_photos_is_not_cached_once_photos_are_given(tmp_path: Path) -> None:
    """Its parity was measured on synthetic inputs; with photos it is measured again (a real export and check)."""
    out = tmp_path / "out"
    assert [r.status for r in export(out, ["onnx:fp32"], towers=("image",))] == ["ok"]
    assert [e["parity"]["inputs"] for e in entries(out).values()] == ["synthetic_images"]
    results = export(out, ["onnx:fp32"], towers=("image",), calibration=photos(tmp_path / "calib", seed=0))
    assert [r.status for r in results] == ["ok"]
    assert [e["parity"]["inputs"] for e in entries(out).values()] == ["calibration_images"]


def test_frontier_cache_keys_on_photo_content(tmp_path: Path) -> None:
    calib = photos(tmp_path / "calib", seed=0)
    before = sweep._cache_key("mobileclip-s0", None, calib)
    assert sweep._cache_key("mobileclip-s0", None, calib) == before
    photos(calib, seed=1)
    assert sweep._cache_key("mobileclip-s0", None, calib) != before


# --------------------------------------------------------------------- artifacts checked before use


def tampered(tmp_path: Path) -> tuple[Path, Path]:
    folder = export_folder(tmp_path)
    image = folder / "mobileclip-s0_image_onnx_fp32.onnx"
    image.write_bytes(image.read_bytes() + b"\0")  # still loads: only the hash can tell
    return folder, image


def test_changed_artifact_is_refused_by_collect(tmp_path: Path) -> None:
    folder, image = tampered(tmp_path)
    for given in ([folder], [image]):  # the export folder, or the file next to its manifest
        with pytest.raises(UserError, match="does not match its manifest entry"):
            artifacts.collect(given)
    with pytest.raises(UserError, match="does not match"):  # frontier's reuse goes through the same check
        sweep._exported(folder, (("onnx", "fp32"),))


def test_manifest_entry_without_sha256_is_refused(tmp_path: Path) -> None:
    folder = export_folder(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["artifacts"][0]["sha256"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="has no sha256"):
        artifacts.collect([folder])


def test_bench_and_eval_refuse_a_changed_artifact(tmp_path: Path) -> None:
    folder, _ = tampered(tmp_path)
    assert "does not match" in refused("bench", folder, "--no-eager", "-o", tmp_path / "b.jsonl")
    assert not (tmp_path / "b.jsonl").exists()
    assert "does not match" in refused("eval", "--data", tmp_path, "--artifacts", folder)


def test_truncated_artifact_is_one_clear_error(tmp_path: Path) -> None:
    image = tiny_onnx(tmp_path / "mobileclip-s0_image_onnx_fp32.onnx")
    image.write_bytes(image.read_bytes()[:40])
    tiny_text_onnx(tmp_path / "mobileclip-s0_text_onnx_fp32.onnx")
    message = refused("bench", image, "--no-eager", "--threads", "1", "-o", tmp_path / "b.jsonl")
    assert "ONNX Runtime cannot load it" in message and "truncated" in message
    data = tmp_path / "data" / "3"  # a valid folder (class index 3): the truncated artifact is what is wrong
    data.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(data / "shark.png")
    message = refused("eval", "--data", data.parent, "--artifacts", image, "--artifacts",
                      tmp_path / "mobileclip-s0_text_onnx_fp32.onnx")
    assert "ONNX Runtime cannot load it" in message
    pte = tmp_path / "mobileclip-s0_image_executorch-xnnpack_fp32.pte"
    pte.write_bytes(b"not a program")
    assert "ExecuTorch cannot load it" in refused("bench", pte, "--no-eager", "--threads", "1")


# ----------------------------------------------------------------------- two exports, one folder

WORKER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from rich.console import Console
from helpers import TINY, WEIGHTS, tiny_model
from helpers import registered
from mobileclip_deploy.exporters import pipeline
from mobileclip_deploy.exporters.backends import resolve_pairs
registration = registered()  # the lock and the manifest are under test, not a real converter
registration.__enter__()
request = pipeline.ExportRequest(pairs=resolve_pairs([], [sys.argv[2]]), output_dir=Path(sys.argv[1]), towers=("text",),
                                 parity=False)
print("STATUS", *[r.status for r in pipeline.run(request, tiny_model(), TINY, WEIGHTS, Console(file=sys.stdout))])
"""


def test_two_exports_into_one_folder_take_turns(tmp_path: Path) -> None:
    """Two real processes start while the folder is locked: both wait, both finish, the manifest has both."""
    out = tmp_path / "out"
    out.mkdir()
    code = WORKER.format(tests=str(TESTS))
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    with locked_folder(out):
        procs = [subprocess.Popen([sys.executable, "-c", code, str(out), quant], stdout=log.open("w"),
                                  stderr=subprocess.STDOUT, text=True)
                 for quant, log in zip(("test-recording:fp32", "test-recording:fp16"), logs)]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not all("waiting" in log.read_text() for log in logs):
            assert all(p.poll() is None for p in procs), [log.read_text()[-3000:] for log in logs]
            time.sleep(0.5)
        assert not list(out.iterdir()), "an export wrote into a locked folder"
    for proc, log in zip(procs, logs):
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
        text = " ".join(log.read_text().split())
        assert "waiting for it to finish" in text and "STATUS ok" in text, text[-3000:]
    assert sorted(entries(out)) == ["tiny-s0_text_test-recording_fp16.rec", "tiny-s0_text_test-recording_fp32.rec"]
    assert all((out / f).is_file() for f in entries(out))
