"""The backend registry: a backend that exists only in the tests joins by registering, and runs through plan, export,
parity, manifest, bench and eval without any other module naming it; nothing outside a backend's module compares
backend names; every writer of an export folder takes the same lock."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Recording, registered
from rich.console import Console
from test_export_options import TINY, entries, export, tiny_model

from mobileclip_deploy.atomic import locked_folder
from mobileclip_deploy.bench.artifacts import collect
from mobileclip_deploy.bench.evaluate import artifact_encoder
from mobileclip_deploy.bench.host import loader_for, measure
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import pipeline
from mobileclip_deploy.exporters.backends import all_backends, get_backend, resolve_pairs

PACKAGE = Path(__file__).resolve().parents[1] / "mobileclip_deploy"
pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_registered_backend_runs_through_export_parity_manifest_bench_and_eval(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with registered() as backend:
        assert backend is get_backend("test-recording") and "test-recording" in all_backends()
        results = export(out, ["test-recording:fp32"], options={"note": "from the test"})
        assert [r.status for r in results] == ["ok", "ok"]
        assert {b.options["note"] for b in Recording.seen} == {"from the test"}  # per-format options reach it
        for entry in entries(out).values():
            assert entry["backend"] == "test-recording" and entry["file"].endswith(".rec")
            parity = entry["parity"]  # judged by the common rule on the backend's own runtime
            assert parity["passed"] and parity["check"] == "test-recording" and parity["min_cosine"] > 0.99999
        artifacts = collect([out])  # bench and eval read the folder through the same registry
        assert {a.runtime for a in artifacts} == {"test-recording"}
        image = next(a for a in artifacts if a.tower == "image")
        load, info = loader_for(image, threads=1)
        assert measure(load, warmup=0, iterations=2).samples_ms and info["name"] == "test-recording"
        pixels = torch.rand(3, 3, 64, 64)
        encoded = artifact_encoder(image.path, image.backend)(pixels)
        with torch.no_grad():
            expected = tiny_model().encode_image(pixels)
        assert torch.allclose(encoded, expected, atol=1e-4)
    with pytest.raises(UserError, match="unknown format 'test-recording'"):
        get_backend("test-recording")  # gone with its registration


def test_an_option_no_requested_format_honours_is_refused(tmp_path: Path) -> None:
    with registered():
        request = pipeline.ExportRequest(pairs=resolve_pairs([], ["onnx:fp32"]), output_dir=tmp_path / "o",
                                         options={"note": "x"})
        with pytest.raises(UserError, match="--note applies to the test backend"):
            pipeline.plan(request)


def test_a_format_left_without_a_scheme_is_refused() -> None:
    with pytest.raises(UserError, match="--format onnx has no scheme"):
        resolve_pairs(["onnx"], ["coreml:auto"])


def test_when_every_job_fails_the_results_still_say_why(tmp_path: Path) -> None:
    class Failing(Recording):
        def export(self, build):
            raise RuntimeError("converter crashed")

    out = tmp_path / "new"
    with registered(Failing):
        request = pipeline.ExportRequest(pairs=resolve_pairs([], ["test-recording:fp32"]), output_dir=out,
                                         towers=("text",))
        results = pipeline.run(request, tiny_model(), TINY, "w", Console(quiet=True))
    assert [r.status for r in results] == ["failed"] and "converter crashed" in results[0].message
    assert not out.exists()  # what the run created is taken back


def _name_comparisons(source: str, names: set[str]) -> list[int]:
    """Lines of `source` comparing something with a backend name (`==`, `!=`, `in (...)`)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            consts = [c for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
            consts += [e for c in node.comparators if isinstance(c, (ast.Tuple, ast.List, ast.Set))
                       for e in c.elts if isinstance(e, ast.Constant)]
            if any(c.value in names for c in consts):
                lines.append(node.lineno)
    return sorted(set(lines))


def test_no_module_outside_the_backends_compares_backend_names() -> None:
    names = set(all_backends())
    offenders = [f"{path.relative_to(PACKAGE)}:{line}" for path in PACKAGE.rglob("*.py")
                 if "backends" not in path.parts for line in _name_comparisons(path.read_text(), names)]
    assert offenders == []
    planted = 'x = 1\nif entry.get("backend") == "onnx" or b in ("coreml", "tflite"):\n    pass\n'
    assert _name_comparisons(planted, names) == [2]  # the scan finds a comparison where there is one


def test_export_and_verify_writers_take_one_lock(tmp_path: Path) -> None:
    """`verify` records its results under the same lock as `export`, and leaves no lock file behind."""
    from mobileclip_deploy.exporters import manifest as mf
    from mobileclip_deploy.verify import arm64

    folder = tmp_path / "out"
    folder.mkdir()
    mf.save(folder, {"model": "m", "artifacts": [{"file": "a.onnx", "sha256": "s"}]})
    row = arm64.Row("a.onnx", "cortex-a53", True, {"min_cosine": 1.0})
    done = threading.Event()
    with locked_folder(folder):
        writer = threading.Thread(target=lambda: (arm64.record_results(folder, [{"file": "a.onnx", "sha256": "s"}],
                                                                        [row]), done.set()))
        writer.start()
        time.sleep(0.5)
        assert not done.is_set()  # waiting for the export's lock
    writer.join(10)
    assert done.is_set() and mf.load(folder)["artifacts"][0]["arm64"]["cortex-a53"]["min_cosine"] == 1.0
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json"]
