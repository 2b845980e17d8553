"""The backend registry: a backend that exists only in the tests joins by registering, and runs through plan, export,
parity, manifest, bench and eval without any other module naming it; nothing outside a backend's module compares
backend names; every writer of an export folder takes the same lock."""

from __future__ import annotations

import ast
import re
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY, Recording, entries, export, registered, tiny_model
from rich.console import Console

from mobileclip_deploy.atomic import locked_folder
from mobileclip_deploy.bench.artifacts import collect
from mobileclip_deploy.bench.evaluate import artifact_encoder
from mobileclip_deploy.bench.host import loader_for, measure
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import pipeline
from mobileclip_deploy.exporters.backends import (
    all_backends,
    for_suffix,
    get_backend,
    resolve_pairs,
)

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


class Twin(Recording):
    """A backend whose jobs can write a second file beside the artifact (as ONNX's `.ort`)."""

    name = "test-twin"
    suffixes = (".rec", ".rec-twin")


def test_every_suffix_a_backend_declares_names_its_loose_files(tmp_path: Path) -> None:
    assert Recording.suffixes == (".rec",)  # by default, the artifact's suffix alone
    for name in ("photo.rec", "photo.rec-twin", "photo.ort", "photo.weird"):
        (tmp_path / name).write_bytes(b"not read")
    assert collect([tmp_path / "photo.ort"])[0].backend == "onnx" and for_suffix(".ort") == [get_backend("onnx")]
    with registered(Twin) as twin:
        assert for_suffix(".rec-twin") == [twin]
        assert [a.backend for a in collect([tmp_path / "photo.rec", tmp_path / "photo.rec-twin"])] == ["test-twin"] * 2
        with pytest.raises(UserError, match=r"unknown artifact type \(expected one of .*\.rec, \.rec-twin"):
            collect([tmp_path / "photo.weird"])
    with pytest.raises(UserError, match="unknown artifact type"):
        collect([tmp_path / "photo.rec-twin"])  # gone with its registration


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
    """Runtime names that are also backend names (`litert`, `coreai`) are runtime decisions (which Android runner,
    which guest), so only names that are backends alone are looked for; artifact suffixes too (`diagnose` asks the
    backend, never the file name)."""
    from mobileclip_deploy import runtimes

    names = set(all_backends()) - set(runtimes._discover()) | {b.suffix for b in all_backends().values()}
    offenders = [f"{path.relative_to(PACKAGE)}:{line}" for path in PACKAGE.rglob("*.py")
                 if "backends" not in path.parts for line in _name_comparisons(path.read_text(), names)]
    assert offenders == []
    planted = 'x = 1\nif entry.get("backend") == "onnx" or b in ("coreml", "tflite"):\n    pass\ny = p.suffix == ".pte"\n'
    assert _name_comparisons(planted, names) == [2, 4]  # the scan finds a comparison where there is one


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


def test_a_narrow_terminal_gets_a_table_it_can_read() -> None:
    """80 columns: four columns, wrapped, nothing cut; a wide terminal gets every column (and --json everything)."""
    from rich.console import Console as RichConsole

    from mobileclip_deploy.verify import arm64

    name = "mobileclip-s0_image_executorch-xnnpack_auto-8da8w.pte"
    row = arm64.Row(name, "cortex-a76", True, {"min_cosine": 0.999912, "threshold": 0.99, "max_abs_error": 0.01,
                                               "check_cost_emulated_s": 412.0, "evidence": {}})
    for width, columns in ((80, 4), (160, 8)):
        console = RichConsole(width=width, record=True, file=open("/dev/null", "w"))
        table = arm64.table([row], "t", width)
        console.print(table)
        text = console.export_text()
        assert len(table.columns) == columns and "0.999912" in text and "…" not in text
        first = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
        assert "".join(first) == name  # wrapped, not truncated


def test_a_failed_gate_names_the_ways_forward(tmp_path: Path) -> None:
    class Hinting(Recording):
        parity_hints = {"fp32": "try -q test-recording:fp16"}

        def check(self, build, path, handle):
            name, out, facts = super().check(build, path, handle)
            return name, out[::-1].copy(), facts  # every row answers for another input

    with registered(Hinting):
        [result] = export(tmp_path / "o", ["test-recording:fp32"], towers=("image",))
    assert result.status == "failed" and "parity failed" in result.message
    assert result.message.endswith("try -q test-recording:fp16")


def test_recipe_kept_layers_must_name_modules_of_the_model(tmp_path: Path, shared_dir: Path) -> None:
    request = pipeline.ExportRequest(pairs=resolve_pairs([], ["onnx:w8a8"]), output_dir=tmp_path / "o",
                                     towers=("image",), calibration=shared_dir / "data" / "imagenet-samples",
                                     calibration_limit=2, keep={"onnx": {"image": ["model.image_encodr.head"]}})
    with pytest.raises(UserError, match="names 'model.image_encodr.head', which is no module of tiny-s0"):
        pipeline.run(request, tiny_model(), TINY, "w", Console(quiet=True))
    assert not (tmp_path / "o").exists()


def test_a_recipe_for_another_model_is_refused(tmp_path: Path) -> None:
    from helpers import refusal

    recipe = tmp_path / "auto.toml"
    recipe.write_text('model = "mobileclip-s0"\n[formats.onnx]\nschemes = ["fp32"]\n')
    message = refusal("export", "--model", "mobileclip-s2", "--random-weights", "--recipe", recipe, "-o",
                      tmp_path / "o")
    assert "was written for mobileclip-s0" in message and "--model mobileclip-s2" in message


def test_verify_can_be_limited_to_some_backends(tmp_path: Path) -> None:
    """`verify --backend onnx` must not pull the ~4.5 GB ExecuTorch guest because a .pte shares the folder."""
    from mobileclip_deploy.hashing import sha256_path
    from mobileclip_deploy.verify import arm64

    entries = []
    for name, backend in (("a.onnx", "onnx"), ("b.pte", "executorch-xnnpack"), ("c.mlpackage", "coreml")):
        (tmp_path / name).write_bytes(name.encode())
        entries.append({"file": name, "backend": backend, "sha256": sha256_path(tmp_path / name)})
    manifest = {"artifacts": entries}
    assert [e["file"] for e in arm64.select(tmp_path, manifest)] == ["a.onnx", "b.pte"]
    assert [e["file"] for e in arm64.select(tmp_path, manifest, ["onnx"])] == ["a.onnx"]
    assert [e["file"] for e in arm64.select(tmp_path, manifest, ["executorch"])] == ["b.pte"]  # aliases too
    with pytest.raises(UserError, match="no coreml artifacts to verify"):
        arm64.select(tmp_path, manifest, ["coreml"])


def test_no_test_module_imports_another() -> None:
    """Shared test code lives in helpers modules (helpers.py, planted.py, ...), never in a test_*.py another imports."""
    pattern = re.compile(r"^\s*(from\s+(tests\.)?test_\w+\s+import|import\s+(tests\.)?test_\w+)", re.M)
    offenders = [p.name for p in Path(__file__).parent.glob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
