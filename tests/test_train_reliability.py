"""`reinforce` and `distill` as careful as export (issue 31): one identity per run, one clear error, progress on
stderr (plain lines outside a terminal), and the caller's config left as given."""

from __future__ import annotations

import dataclasses
import gc
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from distill_fakes import make_data, tiny_student
from goldens import manifest_path, placeholder_state_dict
from rich.console import Console
from typer.testing import CliRunner

from mobileclip_deploy.atomic import exclusive_folder
from mobileclip_deploy.cli import app
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.training import distributed
from mobileclip_deploy.training import reinforce as rf
from mobileclip_deploy.training.loop import DistillConfig, Trainer, distill
from mobileclip_deploy.training.records import TeacherInfo

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = distributed.DistEnv(0, 0, 1, torch.device("cpu"))


def flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def photos(shared_dir: Path, module_tmp) -> Path:
    folder = module_tmp("photos")
    for f in sorted((shared_dir / "data" / "imagenet-samples").glob("*.JPEG"))[:3]:
        shutil.copy(f, folder / f.name)
    return folder


@pytest.fixture(scope="module")
def data(shared_dir: Path):
    return make_data(shared_dir / "data" / "imagenet-samples")


def tiny_teacher_of(seed: int = 1) -> rf.Teacher:
    student = tiny_student(seed)
    return rf.Teacher(TeacherInfo("tiny-vit", student.variant.embed_dim, 100.0, f"{seed:064d}",
                                  student.variant.image_size, 77), student.eval())


def config(out: Path, **kw) -> DistillConfig:
    base = dict(student="tiny-vit", data="hand-made", out=str(out), steps=3, batch_size=4, lr=1e-3, save_every=1000)
    return DistillConfig(**{**base, **kw})


# -- section 4: one clear error, exit code 2, before any loading ------------------------------------------------

def test_captions_that_are_not_utf8(photos: Path, tmp_path: Path) -> None:
    latin = tmp_path / "caps.csv"
    latin.write_bytes("file,caption\nx.JPEG,caf\xe9 au lait\n".encode("latin-1"))
    res = run("reinforce", "--images", photos, "--teacher", "mobileclip-s0=nothing.pt", "--captions", latin,
              "-o", tmp_path / "out")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert flat(res.stderr).startswith(f"error: caption file {latin} is not UTF-8 text")
    sentences = tmp_path / "s.txt"
    sentences.write_bytes(b"\xff\xfe a photo\n")
    with pytest.raises(UserError, match="sentences file .* is not UTF-8"):
        rf.read_sentences(sentences)


def test_output_refusals_come_before_teacher_loading(photos: Path, tmp_path: Path) -> None:
    """A checkpoint that does not exist would fail the teacher load: the -o refusal must come first."""
    occupied = tmp_path / "mine"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    res = run("reinforce", "--images", photos, "--teacher", "mobileclip-s0=missing.pt", "-o", occupied)
    assert res.exit_code == 2 and "is not a reinforce output" in flat(res.stderr)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for cmd in (["reinforce", "--images", photos, "--teacher", "mobileclip-s0=missing.pt"],
                ["distill", "--student", "mobileclip-s0", "--data", tmp_path / "nowhere", "--steps", "1"]):
        res = run(*cmd, "-o", blocker / "out")
        assert res.exit_code == 2 and "is a file, not a folder" in flat(res.stderr), res.output
    assert (occupied / "notes.txt").read_text() == "keep me"


def test_read_only_output_folder(photos: Path, tmp_path: Path, data) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        res = run("reinforce", "--images", photos, "--teacher", "mobileclip-s0=missing.pt", "-o", locked / "out")
        assert res.exit_code == 2 and "is not writable" in flat(res.stderr)
        with pytest.raises(UserError, match="is not writable"):
            distill(config(locked / "run"), student=tiny_student(), data=data)
    finally:
        locked.chmod(0o755)


def test_unreadable_photo_is_one_error_and_nothing_else(photos: Path, tmp_path: Path, capfd) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"broken.jpg is not a readable image"):
        rf.reinforce(rf.ReinforceConfig(folder, tmp_path / "out", 1), [tiny_teacher_of()])
    gc.collect()  # an unclosed tar writer would now write to its closed file
    assert "Exception ignored" not in capfd.readouterr().err
    assert not list((tmp_path / "out").rglob("*.partial"))


def test_a_second_run_on_one_folder_is_refused(photos: Path, tmp_path: Path, data) -> None:
    out = tmp_path / "out"
    with exclusive_folder(out, "reinforce"):  # the first run, still working
        with pytest.raises(UserError, match=f"another reinforce run is using {out}"):
            rf.reinforce(rf.ReinforceConfig(photos, out, 1), [tiny_teacher_of()])
    run_dir = tmp_path / "run"
    with exclusive_folder(run_dir, "distill"):
        with pytest.raises(UserError, match=f"another distill run is using {run_dir}"):
            distill(config(run_dir), student=tiny_student(), data=data)
    assert not (run_dir / ".lock").exists()  # the lock is on the folder itself: nothing is left behind


# -- section 6: hints name the flags of the command that printed them ------------------------------------------

def test_wrong_variant_hints_name_teacher_and_student_flags(photos: Path, shared_dir: Path, tmp_path: Path) -> None:
    s2 = tmp_path / "s2.pt"
    torch.save(placeholder_state_dict(manifest_path(shared_dir, "mobileclip_s2")), s2)
    res = run("reinforce", "--images", photos, "--teacher", f"mobileclip-s0={s2}", "-o", tmp_path / "out")
    assert res.exit_code == 2 and "Use --teacher mobileclip-s2=CHECKPOINT." in flat(res.stderr)
    assert "--model" not in res.stderr


# -- section 2: one identity per run --------------------------------------------------------------------------

def test_resume_refuses_changed_inputs_naming_them(data, tmp_path: Path) -> None:
    distill(config(tmp_path / "run", steps=2), student=tiny_student(), data=data)
    changed_teacher = dataclasses.replace(data, teachers=[dataclasses.replace(data.teachers[0], checkpoint_sha256="f" * 64),
                                                          *data.teachers[1:]])
    with pytest.raises(UserError, match=r"teachers \("):
        distill(config(tmp_path / "run", steps=4), student=tiny_student(), data=changed_teacher, resume=True)
    fewer = dataclasses.replace(data, records=data.records[:-1])
    with pytest.raises(UserError, match=r"samples_sha256 \("):
        distill(config(tmp_path / "run", steps=2), student=tiny_student(), data=fewer, resume=True)
    for change, name in (({"grad_clip": 0.5}, "grad_clip"), ({"weight_decay": 0.1}, "weight_decay"),
                         ({"amp": False}, "amp")):
        with pytest.raises(UserError, match=rf"other settings: {name} \("):
            distill(config(tmp_path / "run", steps=2, **change), student=tiny_student(), data=data, resume=True)
    init = tmp_path / "init.pt"
    torch.save(tiny_student().state_dict(), init)
    with pytest.raises(UserError, match=r"init_sha256 \(null -> \""):
        distill(config(tmp_path / "run", steps=2, init=str(init)), student=tiny_student(), data=data, resume=True)
    # What does not shape the result may change: the checkpoint interval, the device, the data's path.
    summary = distill(config(tmp_path / "run", steps=2, save_every=1, data="moved"), student=tiny_student(),
                      data=data, resume=True)
    assert summary["steps"] == 2


def test_trainer_leaves_the_callers_config_as_given(data, tmp_path: Path) -> None:
    cfg = config(tmp_path / "run")
    before = dataclasses.asdict(cfg)
    trainer = Trainer(cfg, data, tiny_student(), CPU)
    assert dataclasses.asdict(cfg) == before
    assert trainer.cfg.lr == 1e-3 and trainer.cfg.warmup == 0 and trainer.cfg.weight_decay == 0.2
    assert trainer.cfg.loss == "mobileclip" and trainer.cfg.teacher_scales == [100.0, 100.0]


# -- section 3: --seed fixes a random initialisation ----------------------------------------------------------

def test_seed_makes_a_random_init_reproducible(data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mobileclip_deploy

    monkeypatch.setattr(mobileclip_deploy, "create_model", lambda *a, **k: _unseeded_tiny())
    finals = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        torch.manual_seed(1000 + len(finals))  # whatever ran before must not matter
        summary = distill(config(tmp_path / name, steps=1, seed=seed), data=data)
        finals.append(summary["final"]["loss"])
    assert finals[0] == finals[1] and finals[0] != finals[2]


def _unseeded_tiny():
    from distill_fakes import TINY

    from mobileclip_deploy.models.clip import CLIP

    return CLIP(TINY)


# -- section 5: progress on stderr, plain lines outside a terminal --------------------------------------------

def test_progress_outside_a_terminal_is_plain_lines(data, photos: Path, tmp_path: Path) -> None:
    buf = io.StringIO()
    distill(config(tmp_path / "run", steps=3), student=tiny_student(), data=data,
            console=Console(file=buf, force_terminal=False, width=200))
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("distill: 0/3, 0:00:00 elapsed") and "ETA" not in lines[0]
    assert lines[-1].startswith("distill: 3/3,") and ", done  loss " in lines[-1]
    assert "\x1b" not in buf.getvalue() and "━" not in buf.getvalue()  # no bar, no control codes
    buf = io.StringIO()
    rf.reinforce(rf.ReinforceConfig(photos, tmp_path / "data", 1), [tiny_teacher_of()],
                 console=Console(file=buf, force_terminal=False))
    assert buf.getvalue().splitlines()[-1].startswith("reinforce: 3/3,")


def test_cli_progress_and_notes_go_to_stderr(photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """stdout carries only the result: the summary line(s), or JSON with --json."""
    monkeypatch.setattr(rf, "load_teacher", lambda spec, scale=None: tiny_teacher_of())
    res = run("reinforce", "--images", photos, "--teacher", "tiny=x", "-k", "1", "-o", tmp_path / "d", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["counts"]["samples"] == 3
    assert "reinforce: 3/3" in res.stderr


# -- section 3: BatchNorm statistics at tiny batches ----------------------------------------------------------

def _tiny_mci():
    """A tiny MCi student: its image tower is full of BatchNorms (the tiny ViT of distill_fakes has none)."""
    from mobileclip_deploy.models.clip import CLIP
    from mobileclip_deploy.models.mci import MCiConfig
    from mobileclip_deploy.models.text import TextConfig
    from mobileclip_deploy.registry import get_variant

    variant = dataclasses.replace(
        get_variant("mobileclip-s0"), name="tiny-s0", embed_dim=32, image_size=64,
        image=MCiConfig((1, 1, 1, 1), (16, 32, 32, 64), 2.0, (3,), (False, False, True, True)),
        text=TextConfig(width=64, heads=2, layers=1, mct=True))
    torch.manual_seed(0)
    return CLIP(variant)


def _bn_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or k.endswith("bn.weight")}


def test_batchnorm_statistics_stay_frozen_below_the_minimum_batch(data, tmp_path: Path) -> None:
    """Batch 4 (a student from its teacher fell from 100% to 42% agreement in two steps at lr ~0 with its
    running statistics updated, and kept 100% with them frozen): frozen by default, updated when asked."""
    from mobileclip_deploy.training.loop import MIN_BN_BATCH, resolve

    student = _tiny_mci()
    before = _bn_state(student)
    assert any("running_mean" in k for k in before)
    trainer = Trainer(config(tmp_path / "a", steps=2, batch_size=4, student="tiny-s0"), data, student, CPU)
    trainer.run()
    after = _bn_state(trainer.student)
    running = [k for k in before if "running_" in k]
    assert all(torch.equal(before[k], after[k]) for k in running)
    assert not all(torch.equal(before[k], after[k]) for k in before if k not in running)  # BN weights still train

    updated = Trainer(config(tmp_path / "b", steps=2, batch_size=4, student="tiny-s0", freeze_bn_stats=False),
                      data, _tiny_mci(), CPU)
    updated.run()
    assert not all(torch.equal(before[k], _bn_state(updated.student)[k]) for k in running)
    assert resolve(config(tmp_path, batch_size=MIN_BN_BATCH), data, "mobileclip", CPU).freeze_bn_stats is False
    assert resolve(config(tmp_path, batch_size=MIN_BN_BATCH - 1), data, "mobileclip", CPU).freeze_bn_stats is True


def test_reinforce_resume_refuses_a_replaced_photo(photos: Path, tmp_path: Path) -> None:
    """A photo replaced by another of the same name and size is a different input: the run refuses to resume."""
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    out = tmp_path / "out"
    cfg = rf.ReinforceConfig(folder, out, 1, shard_size=1)
    rf.reinforce(cfg, [tiny_teacher_of()])
    victim = sorted(folder.iterdir())[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same name, same size, other pixels
    victim.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"other settings \(photos_sha256 differ\)"):
        rf.reinforce(cfg, [tiny_teacher_of()])
