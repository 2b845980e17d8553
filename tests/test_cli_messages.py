"""Messages that point the right way (issue 31 section 6): every hint names a flag of the command that printed it,
and each refusal says what is actually wrong, before any model is loaded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mobileclip_deploy.cli import app
from reinforced_fixtures import photos, write_datacompdr_v1


def flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


COMMANDS = ("reinforce", "distill", "export", "eval", "bench", "frontier", "classify", "verify", "reparam")


def flags_of(*path: str) -> set[str]:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")}


@pytest.fixture(scope="module")
def v1(shared_dir: Path, module_tmp) -> Path:
    folder = module_tmp("datacompdr")
    write_datacompdr_v1(folder, photos(shared_dir, 4))
    return folder


@pytest.fixture(scope="module")
def classes(shared_dir: Path, module_tmp) -> Path:
    """Three photos in WordNet-id class folders."""
    import shutil

    root = module_tmp("classes")
    for photo in photos(shared_dir, 3):
        (root / photo.name[:9]).mkdir()
        shutil.copy(photo, root / photo.name[:9] / photo.name)
    return root


def refusals(tmp: Path, v1: Path, samples: Path) -> list[tuple[tuple[str, ...], list[object], str]]:
    """(command path, arguments, a phrase of the refusal) for refusals that carry a hint."""
    no_classes = tmp / "flat"
    no_classes.mkdir(exist_ok=True)
    (no_classes / "n01491361").mkdir(exist_ok=True)
    return [
        (("distill",), ["--student", "mobileclip-s0", "--data", v1, "--steps", 1, "--batch-size", 9, "-o", tmp / "r"],
         "use --batch-size 4 or fewer"),
        (("distill",), ["--student", "mobileclip-s0", "--data", v1, "--steps", 1, "--teacher-scale", 50, "--batch-size", 2,
                        "-o", tmp / "r"], "--teacher-scale was given 1 times"),
        (("distill",), ["--student", "mobileclip-s0", "--data", v1, "--steps", 1, "--loss", "dime-fm", "--batch-size", 2,
                        "-o", tmp / "r"], "reinforce with --sentences"),
        (("reinforce",), ["--images", samples, "--teacher", "mobileclip-s0=x.pt", "--teacher-scale", 1,
                          "--teacher-scale", 2, "-o", tmp / "o"], "--teacher-scale is given 2"),
        (("eval",), ["--data", no_classes, "-m", "mobileclip-s0", "--random-weights"], "--class-map"),
        (("eval",), ["--data", samples, "--artifacts", tmp], "has no manifest.json"),
        (("bench",), ["--no-eager", "-o", tmp / "b.jsonl"], "--model NAME"),
        (("frontier",), ["--variants", "mobileclip-s0", "--checkpoint", "mobileclip-s1=x.pt", "-o", tmp / "f"],
         "add it to --variants"),
        (("classify",), [samples, "-m", "mobileclip-s0", "--labels", ",", "--random-weights"], "--labels needs"),
    ]


def test_every_hint_names_a_flag_of_its_own_command(tmp_path: Path, v1: Path, shared_dir: Path) -> None:
    samples = shared_dir / "data" / "imagenet-samples"
    for path, args, phrase in refusals(tmp_path, v1, samples):
        res = run(*path, *args)
        message = flat(res.stderr)
        assert res.exit_code == 2 and phrase in message, (path, message)
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", message))
        # A hint may send the user to another command, by name ("reinforce with --sentences").
        others = set().union(*(flags_of(c) for c in COMMANDS if c != path[0] and re.search(rf"\b{c} ", message)))
        assert named <= flags_of(*path) | others, (path, named - flags_of(*path) - others, message)


def test_classify_takes_a_folder(tmp_path: Path, classes: Path) -> None:
    import json

    folder = next(classes.iterdir())
    res = run("classify", folder, "-m", "mobileclip-s0", "--labels", "shark", "--random-weights", "--json")
    assert res.exit_code == 0, res.output
    assert [r["image"] for r in json.loads(res.stdout)["results"]] == [str(p) for p in sorted(folder.iterdir())]
    # Outside a terminal the progress is plain lines on stderr (what, how many of how many, elapsed), no bar.
    lines = [line for line in res.stderr.splitlines() if line.startswith("encoding prompts for 1 labels:")]
    assert lines and lines[-1].endswith(", done") and "80/80" in lines[-1] and "━" not in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run("classify", empty, "-m", "mobileclip-s0", "--labels", "cat", "--random-weights")
    assert res.exit_code == 2 and "holds no images" in flat(res.stderr) and "not found" not in res.stderr


def test_eval_refuses_a_bad_class_map_before_loading_a_model(tmp_path: Path, classes: Path) -> None:
    """A checkpoint that does not exist would be refused by the model load: the class map's refusal comes first."""
    bad_map = tmp_path / "map.txt"
    bad_map.write_text("not-a-wnid tiger shark\n")
    res = run("eval", "--data", classes, "-m", "mobileclip-s0",
              "--checkpoint", tmp_path / "missing.pt", "--class-map", bad_map)
    assert res.exit_code == 2 and "does not start with a WordNet id" in flat(res.stderr)


def test_eval_says_up_front_how_much_work_and_how_to_shorten_it(classes: Path, shared_dir: Path) -> None:
    from mobileclip_deploy.bench.evaluate import plan_eval

    labels = shared_dir / "data" / "imagenet-samples" / "labels.csv"
    full = plan_eval(classes, "openai", "all", labels)
    assert full.prompts == 80_000
    line = full.announcement(cached=False)
    assert line.startswith(f"eval: 80,000 prompts (1000 classes x 80 templates), {len(full.items)} images")
    assert "--templates simple (7,000 prompts)" in line and "--classes present" in line
    small = plan_eval(classes, "simple", "present", labels)
    assert "shortens" not in small.announcement(cached=False)
    assert full.announcement(cached=True).startswith("eval: the zero-shot classifier comes from the cache")
