"""`bundle ios`: copies Core ML encoders, tokenizer files and a filtered manifest into the app."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mobileclip_deploy.bundle import bundle_ios
from mobileclip_deploy.cli import app
from mobileclip_deploy.errors import UserError

FIXTURE = Path(__file__).parent / "fixtures" / "manifest_example.json"


def make_export(root: Path, *, with_coreml: bool = True) -> Path:
    """A fake export folder shaped like the manifest fixture (tiny files instead of models)."""
    export = root / "export"
    manifest = json.loads(FIXTURE.read_text())
    if not with_coreml:
        manifest["artifacts"] = [a for a in manifest["artifacts"] if a["backend"] != "coreml"]
    for artifact in manifest["artifacts"]:
        path = export / artifact["file"]
        if path.suffix == ".mlpackage":
            (path / "Data" / "com.apple.CoreML").mkdir(parents=True)
            (path / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"\0" * 1000)
            (path / "Manifest.json").write_text("{}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"onnx")
    (export / "tokenizer").mkdir(parents=True)
    (export / "tokenizer" / "merges.txt").write_text("i n\nt h\n")
    (export / "tokenizer" / "vocab.json").write_text('{"a</w>": 320}')
    (export / "manifest.json").write_text(json.dumps(manifest))
    return export


def make_app(root: Path) -> Path:
    demo = root / "MobileCLIPDemo"
    (demo / "Resources" / "Models").mkdir(parents=True)
    (demo / "project.yml").write_text("name: MobileCLIPDemo\n")
    return demo


def test_bundle_into_demo_app(tmp_path: Path) -> None:
    export, demo = make_export(tmp_path), make_app(tmp_path)
    report = bundle_ios(export, demo)

    target = demo / "Resources" / "Models" / "mobileclip-s0"
    assert report.destination == target
    assert [(a.tower, a.scheme, a.file) for a in report.artifacts] == [
        ("image", "fp16", "mobileclip-s0_image_coreml_fp16.mlpackage"),
        ("text", "fp16", "mobileclip-s0_text_coreml_fp16.mlpackage"),
    ]
    assert all(a.size_bytes == 1002 for a in report.artifacts)
    assert (target / "mobileclip-s0_image_coreml_fp16.mlpackage" / "Data" / "com.apple.CoreML" / "model.mlmodel").is_file()
    assert (target / "tokenizer" / "merges.txt").read_text() == "i n\nt h\n"
    assert (target / "tokenizer" / "vocab.json").is_file()
    assert not (target / "mobileclip-s0_image_onnx_fp32.onnx").exists()

    manifest = json.loads((target / "manifest.json").read_text())
    assert [a["backend"] for a in manifest["artifacts"]] == ["coreml", "coreml"]
    assert manifest["tokenizer"] == json.loads(FIXTURE.read_text())["tokenizer"]
    assert manifest["preprocessing"]["image_size"] == 256
    assert not [p for p in demo.rglob("*.partial")], "no temporary folder is left behind"


def test_bundle_twice_replaces_previous_copy(tmp_path: Path) -> None:
    export, demo = make_export(tmp_path), make_app(tmp_path)
    bundle_ios(export, demo)
    stale = demo / "Resources" / "Models" / "mobileclip-s0" / "stale.txt"
    stale.write_text("old")
    bundle_ios(export, demo)
    assert not stale.exists()


def test_bundle_into_plain_folder(tmp_path: Path) -> None:
    export = make_export(tmp_path)
    out = tmp_path / "plain"
    report = bundle_ios(export, out)
    assert report.destination == out
    assert (out / "manifest.json").is_file()
    assert (out / "mobileclip-s0_text_coreml_fp16.mlpackage").is_dir()


def test_refuses_to_overwrite_unrelated_folder(tmp_path: Path) -> None:
    export = make_export(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="refusing to replace"):
        bundle_ios(export, out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_refuses_export_without_coreml(tmp_path: Path) -> None:
    export, demo = make_export(tmp_path, with_coreml=False), make_app(tmp_path)
    with pytest.raises(UserError, match=r"no Core ML artifacts \(backend 'coreml'"):
        bundle_ios(export, demo)
    assert list((demo / "Resources" / "Models").iterdir()) == []


def test_refuses_missing_manifest_and_folder(tmp_path: Path) -> None:
    export, demo = make_export(tmp_path), make_app(tmp_path)
    (export / "manifest.json").unlink()
    with pytest.raises(UserError, match="has no manifest.json"):
        bundle_ios(export, demo)
    with pytest.raises(UserError, match="does not exist"):
        bundle_ios(tmp_path / "nowhere", demo)


def test_refuses_listed_but_missing_model(tmp_path: Path) -> None:
    export, demo = make_export(tmp_path), make_app(tmp_path)
    shutil.rmtree(export / "mobileclip-s0_text_coreml_fp16.mlpackage")
    with pytest.raises(UserError, match="mobileclip-s0_text_coreml_fp16.mlpackage"):
        bundle_ios(export, demo)


def test_cli_table_and_json(tmp_path: Path) -> None:
    export, demo = make_export(tmp_path), make_app(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["bundle", "ios", "--export", str(export), "--app", str(demo)])
    assert result.exit_code == 0, result.output
    assert "bundled into" in result.output
    assert all(word in result.output for word in ("image", "text", "fp16", "0.0 MB"))

    result = runner.invoke(app, ["bundle", "ios", "--export", str(export), "--app", str(demo), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["model"] == "mobileclip-s0"
    assert [a["file"] for a in report["artifacts"]] == [
        "mobileclip-s0_image_coreml_fp16.mlpackage",
        "mobileclip-s0_text_coreml_fp16.mlpackage",
    ]


def test_cli_reports_user_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bundle", "ios", "--export", str(tmp_path / "missing"), "--app", str(tmp_path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, UserError)
    assert "does not exist" in str(result.exception)
