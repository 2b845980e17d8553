"""Users' files are never deleted or replaced unasked, and a bad destination is refused before the work.

Issue 12, sections 1 and 4: the atomic writer itself refuses what it was not told to replace; `reparam`,
`bundle ios`, `export`, `bench -o` and `eval -o` check their destinations up front.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import TINY, WEIGHTS, make_app, make_export, refused, tiny_model
from rich.console import Console
from tiny_artifacts import tiny_onnx
from typer.testing import CliRunner

from mobileclip_deploy.atomic import atomic_path, check_destination, write_text
from mobileclip_deploy.bundle import MARKER, bundle_ios
from mobileclip_deploy.cli import app
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import pipeline
from mobileclip_deploy.exporters.backends import resolve_pairs


def cli(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def a_users_folder(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("keep me")
    (path / "sub" / "photo.jpg").write_bytes(b"\xff\xd8 jpeg")
    return path


def intact(path: Path) -> bool:
    return (path / "notes.txt").read_text() == "keep me" and (path / "sub" / "photo.jpg").is_file()


# ------------------------------------------------------------------------------------------- the writer


def must_not_run(why: str):
    """A stand-in for work that must not start: the refusal comes first."""
    def fail(*args):
        raise AssertionError(why)
    return fail


def test_writer_refuses_an_existing_path_unless_told(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(UserError, match="refusing to replace"):
        write_text(target, "new")
    assert target.read_text() == "old"
    write_text(target, "new", replace=True)
    assert target.read_text() == "new"


def test_writer_never_replaces_a_folder_with_a_file(tmp_path: Path) -> None:
    folder = a_users_folder(tmp_path / "mine")
    for replace in (False, True):
        with pytest.raises(UserError, match="folder"):
            write_text(folder, "a file", replace=replace)
        assert intact(folder)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        with atomic_path(blocker, replace=True) as tmp:
            tmp.mkdir()
    assert blocker.read_text() == "x"
    assert not list(tmp_path.glob(".*.partial"))


def test_writer_swaps_a_folder_only_for_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "pkg.mlpackage"
    folder.mkdir()
    (folder / "old").write_text("old")
    with atomic_path(folder, replace=True) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == ["new"]
    assert not list(tmp_path.glob(".*.partial"))


def test_writer_keeps_the_old_folder_when_the_swap_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = a_users_folder(tmp_path / "pkg")

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        with atomic_path(folder, replace=True) as tmp:
            tmp.mkdir()
    assert intact(folder)


def test_destination_under_a_file_or_a_folder_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="is a file"):
        check_destination(blocker / "deeper" / "out.json")
    with pytest.raises(UserError, match="is a folder"):
        check_destination(tmp_path)
    with pytest.raises(UserError, match="is a file"):
        write_text(blocker / "out.json", "{}")
    assert check_destination(tmp_path / "new" / "out.json") == tmp_path / "new" / "out.json"
    assert not (tmp_path / "new").exists()  # checking creates nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_destination_in_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(UserError, match="not writable"):
            check_destination(locked / "out.pt")
    finally:
        locked.chmod(0o755)


# ---------------------------------------------------------------------------------------------- reparam


@pytest.fixture
def tiny_reparam(monkeypatch: pytest.MonkeyPatch):
    """`reparam` on the tiny S0-shaped model, so a real fold-and-write takes a second."""
    from mobileclip_deploy.cli import zoo

    monkeypatch.setattr(zoo, "load_model_for_cli", lambda model, ckpt, rnd: (tiny_model(), TINY, None))


def test_reparam_onto_a_folder_is_refused_and_the_folder_kept(tmp_path: Path) -> None:
    folder = a_users_folder(tmp_path / "mine")
    message = refused(cli("reparam", "-m", "mobileclip-s0", "--random-weights", "-o", folder))
    assert "is a folder" in message
    assert intact(folder)


def test_reparam_onto_its_own_checkpoint_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "mobileclip_s0.pt"
    ckpt.write_bytes(b"the user's only copy")
    message = refused(cli("reparam", "-m", "mobileclip-s0", "-c", ckpt, "-o", tmp_path / "." / ckpt.name))
    assert "is the input checkpoint" in message
    assert ckpt.read_bytes() == b"the user's only copy"


def test_reparam_destination_under_a_file_is_refused_before_the_work(tmp_path: Path, monkeypatch) -> None:
    from mobileclip_deploy.cli import zoo

    monkeypatch.setattr(zoo, "load_model_for_cli",
                        must_not_run("the model was loaded before the destination was checked"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "is a file" in refused(cli("reparam", "-m", "mobileclip-s0", "--random-weights", "-o", blocker / "x.pt"))


def test_reparam_safetensors_name_gets_safetensors(tmp_path: Path, tiny_reparam) -> None:
    from safetensors.torch import load_file

    from mobileclip_deploy import reparameterize

    out = tmp_path / "folded.safetensors"
    first = cli("reparam", "-m", "mobileclip-s0", "--random-weights", "-o", out, "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout[first.stdout.index("{"):])["replaced"] is False
    assert out.read_bytes()[:2] != b"PK"  # not torch's zip pickle
    state = load_file(str(out))
    expected = reparameterize(tiny_model()).state_dict()
    assert set(state) == set(expected) and all(torch.equal(state[k], expected[k]) for k in expected)
    again = cli("reparam", "-m", "mobileclip-s0", "--random-weights", "-o", out)
    assert again.exit_code == 0 and f"replaced {out}" in " ".join(again.output.split())


def test_reparam_pt_name_gets_a_torch_file(tmp_path: Path, tiny_reparam) -> None:
    from mobileclip_deploy import reparameterize

    out = tmp_path / "folded.pt"
    assert cli("reparam", "-m", "mobileclip-s0", "--random-weights", "-o", out).exit_code == 0
    state = torch.load(out, weights_only=True)
    expected = reparameterize(tiny_model()).state_dict()
    assert set(state) == set(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)


# ----------------------------------------------------------------------------------------------- bundle


def test_bundle_app_that_is_a_file_is_refused(tmp_path: Path) -> None:
    export_dir = make_export(tmp_path)
    blocker = tmp_path / "App.txt"
    blocker.write_text("not an app")
    message = refused(cli("bundle", "ios", "--export", export_dir, "--app", blocker))
    assert "is a file" in message and blocker.read_text() == "not an app"


def test_bundle_never_wipes_a_folder_it_did_not_make(tmp_path: Path) -> None:
    """A manifest.json alone does not make a folder a bundle: the user's export folder must survive."""
    export_dir = make_export(tmp_path)
    theirs = make_export(tmp_path / "users")  # an export folder of the user's: it holds a manifest.json
    before = sorted(p.relative_to(theirs) for p in theirs.rglob("*"))
    with pytest.raises(UserError, match="did not put there"):
        bundle_ios(export_dir, theirs)
    assert sorted(p.relative_to(theirs) for p in theirs.rglob("*")) == before


def test_bundle_replaces_its_own_bundle_and_says_so(tmp_path: Path) -> None:
    export_dir, demo = make_export(tmp_path), make_app(tmp_path)
    first = cli("bundle", "ios", "--export", export_dir, "--app", demo)
    assert first.exit_code == 0 and "replaced" not in first.output
    assert (demo / "Resources" / "Models" / "mobileclip-s0" / MARKER).is_file()
    again = cli("bundle", "ios", "--export", export_dir, "--app", demo)
    assert again.exit_code == 0 and "replaced the earlier bundle" in again.output


# ----------------------------------------------------------------------------------------------- export


def made_by(folder: Path, checkpoint_sha256: str | None) -> Path:
    """An export folder as an earlier run of tiny-s0 left it: one artifact of the given weights."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny-s0_text_onnx_fp32.onnx").write_bytes(b"an earlier run's artifact")
    entry = {"file": "tiny-s0_text_onnx_fp32.onnx", "checkpoint_sha256": checkpoint_sha256, "status": "ok"}
    (folder / "manifest.json").write_text(json.dumps({"model": TINY.name, "checkpoint_sha256": checkpoint_sha256,
                                                      "artifacts": [entry]}))
    return folder


def run_into(folder: Path, checkpoint_sha256: str | None, **options):
    request = pipeline.ExportRequest(pairs=resolve_pairs([], ["onnx:fp32"]), output_dir=folder, towers=("text",),
                                     **options)
    return pipeline.run(request, tiny_model(), TINY, checkpoint_sha256, Console(quiet=True))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize(("theirs", "ours", "named"), [
    (WEIGHTS, "another-checkpoint", f"checkpoint sha256 {WEIGHTS[:12]}"),
    (None, None, "random weights (--random-weights)"),  # every random run used to delete the last one
    (None, WEIGHTS, "random weights (--random-weights)"),
])
def test_export_refuses_a_folder_of_other_weights(tmp_path: Path, theirs, ours, named) -> None:
    folder = made_by(tmp_path / "out", theirs)
    before = snapshot(folder)
    with pytest.raises(UserError) as info:
        run_into(folder, ours)
    message = str(info.value)
    assert named in message and "--overwrite" in message and "--output-dir" in message
    assert snapshot(folder) == before


def test_overwrite_replaces_other_weights(tmp_path: Path) -> None:
    from helpers import Recording, registered

    class Failing(Recording):  # the refusal and removal are what is tested, not a converter
        def export(self, build):
            raise RuntimeError("converter crashed")

    folder = made_by(tmp_path / "out", "old-checkpoint")
    with registered(Failing):
        request = pipeline.ExportRequest(pairs=resolve_pairs([], ["test-recording:fp32"]), output_dir=folder,
                                         towers=("text",), overwrite=True)
        results = pipeline.run(request, tiny_model(), TINY, WEIGHTS, Console(quiet=True))
    assert [r.status for r in results] == ["failed"] and "converter crashed" in results[0].message
    assert not (folder / "tiny-s0_text_onnx_fp32.onnx").exists()
    assert not (folder / "manifest.json").exists()  # no manifest listing nothing


def test_cli_overwrite_flag_reaches_the_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def record(request, *args):
        seen.append(request.overwrite)
        return []

    monkeypatch.setattr(pipeline, "run", record)
    monkeypatch.setattr("mobileclip_deploy.cli.export.load_model_for_cli", lambda *a: (None, TINY, None))
    for flags in ([], ["--overwrite"]):
        assert cli("export", "--random-weights", "-f", "onnx", "-q", "fp32", "-o", tmp_path / "o", *flags).exit_code == 0
    assert seen == [False, True]


def test_refused_export_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "new-out"
    message = refused(cli("export", "-c", tmp_path / "missing.pt", "-f", "onnx", "-q", "fp32", "-o", out))
    assert "does not exist" in message and not out.exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "is a file" in refused(cli("export", "--random-weights", "-f", "onnx", "-q", "fp32", "-o", blocker / "o"))


# ------------------------------------------------------------------------------------ bench -o, eval -o


def test_bench_output_under_a_file_is_refused_before_measuring(tmp_path: Path, monkeypatch) -> None:
    from mobileclip_deploy.cli import bench as bench_cli

    monkeypatch.setattr(bench_cli, "_host_runs", must_not_run("measured before the destination was checked"))
    model = tiny_onnx(tmp_path / "m_image_onnx_fp32.onnx")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    message = refused(cli("bench", model, "--no-eager", "-o", blocker / "bench.jsonl"))
    assert "is a file" in message and blocker.read_text() == ""


def test_eval_output_under_a_file_is_refused_before_the_evaluation(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    message = refused(cli("eval", "--data", tmp_path / "no-such-data", "-m", "mobileclip-s0", "--random-weights",
                          "-o", blocker / "result.json"))
    assert "is a file" in message


def test_frontier_output_under_a_file_is_refused_before_any_export(tmp_path: Path, monkeypatch) -> None:
    from mobileclip_deploy.bench import sweep

    monkeypatch.setattr(sweep, "build_artifacts", must_not_run("exported before the destination was checked"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    message = refused(cli("frontier", "--variants", "mobileclip-s0", "--schemes", "onnx:fp32", "--warmup", "0",
                          "--iterations", "1", "-o", blocker / "fr"))
    assert "is a file" in message and blocker.read_text() == ""


@pytest.mark.parametrize("content", [b"\x08\x07 an onnx model, not text", b"notes of mine\n", b'{"a": 1}\n[1, 2]\n'])
def test_bench_never_appends_to_a_file_that_is_not_records(tmp_path: Path, monkeypatch, content: bytes) -> None:
    from mobileclip_deploy.cli import bench as bench_cli

    monkeypatch.setattr(bench_cli, "_host_runs", lambda *args: pytest.fail("measured before checking --output"))
    model = tiny_onnx(tmp_path / "m_image_onnx_fp32.onnx")
    theirs = tmp_path / "theirs.txt"
    theirs.write_bytes(content)
    assert "not a JSON-lines records file" in refused(cli("bench", model, "--no-eager", "-o", theirs))
    assert theirs.read_bytes() == content
