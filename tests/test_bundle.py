"""`bundle ios`: copies Core ML encoders, tokenizer files and a filtered manifest into the app."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import make_app, make_export
from typer.testing import CliRunner

from mobileclip_deploy.bundle import bundle_android, bundle_ios
from mobileclip_deploy.cli import app
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.hashing import sha256_path


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
    assert manifest["tokenizer"] == json.loads((export / "manifest.json").read_text())["tokenizer"]
    assert manifest["preprocessing"]["image_size"] == 256
    assert not [p for p in demo.rglob("*.partial")], "no temporary folder is left behind"


def test_bundle_twice_replaces_previous_copy(tmp_path: Path) -> None:
    export, demo = make_export(tmp_path), make_app(tmp_path)
    bundle_ios(export, demo)
    target = demo / "Resources" / "Models" / "mobileclip-s0"
    (export / "manifest.json").write_text(json.dumps({**json.loads((export / "manifest.json").read_text()),
                                                      "created": "later"}))
    assert bundle_ios(export, demo).replaced
    assert json.loads((target / "manifest.json").read_text())["created"] == "later"


@pytest.mark.parametrize("where", ["MY_NOTES.txt", "tokenizer/mine.txt"])
def test_rebundle_never_deletes_a_file_the_user_added(tmp_path: Path, where: str) -> None:
    export, demo = make_export(tmp_path), make_app(tmp_path)
    bundle_ios(export, demo)
    notes = demo / "Resources" / "Models" / "mobileclip-s0" / where
    notes.write_text("keep me")
    result = CliRunner().invoke(app, ["bundle", "ios", "--export", str(export), "--app", str(demo)])
    assert result.exit_code == 2 and result.stdout == ""
    assert where in " ".join(result.stderr.split()) and "move them out" in " ".join(result.stderr.split())
    assert notes.read_text() == "keep me"
    notes.unlink()
    assert bundle_ios(export, demo).replaced  # without the user's file the earlier bundle is replaced


@pytest.mark.parametrize("bundler", [bundle_ios, bundle_android])
def test_refuses_an_artifact_changed_after_export(tmp_path: Path, bundler) -> None:
    export, demo = make_export(tmp_path, android=True), make_app(tmp_path)
    manifest = json.loads((export / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if (a["backend"] == "coreml") == (bundler is bundle_ios))
    changed = export / entry["file"]
    (changed / "Manifest.json" if changed.is_dir() else changed).write_text("edited")
    with pytest.raises(UserError, match=rf"{entry['file']} does not match its manifest entry"):
        bundler(export, demo)
    assert list((demo / "Resources" / "Models").iterdir()) == []


@pytest.mark.parametrize("bundler", [bundle_ios, bundle_android])
@pytest.mark.parametrize("key", ["merges", "vocab"])
def test_refuses_a_tokenizer_file_changed_after_export(tmp_path: Path, bundler, key: str) -> None:
    """The app's tokenizer must be the one the encoders were exported with: same reuse check as the artifacts."""
    export, demo = make_export(tmp_path, android=True), make_app(tmp_path)
    name = json.loads((export / "manifest.json").read_text())["tokenizer"][key]
    (export / name).write_text((export / name).read_text() + " ")  # one byte planted
    command = "ios" if bundler is bundle_ios else "android"
    result = CliRunner().invoke(app, ["bundle", command, "--export", str(export), "--app", str(demo)])
    assert result.exit_code == 2 and result.stdout == "" and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert message.count("error:") == 1 and f"{name} does not match its manifest entry" in message
    assert list((demo / "Resources" / "Models").iterdir()) == []  # nothing copied


def test_refuses_tokenizer_files_without_a_recorded_sha256(tmp_path: Path) -> None:
    export, demo = make_export(tmp_path), make_app(tmp_path)
    manifest = json.loads((export / "manifest.json").read_text())
    del manifest["tokenizer"]["sha256"]["vocab"]
    (export / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="vocab.json has no sha256"):
        bundle_ios(export, demo)
    assert list((demo / "Resources" / "Models").iterdir()) == []


def test_read_only_app_folder_is_one_clear_error(tmp_path: Path) -> None:
    import os

    export, demo = make_export(tmp_path), make_app(tmp_path)
    models = demo / "Resources" / "Models"
    models.chmod(0o555)
    try:
        if os.access(models, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        result = CliRunner().invoke(app, ["bundle", "ios", "--export", str(export), "--app", str(demo)])
    finally:
        models.chmod(0o755)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is not writable" in " ".join(result.stderr.split())


def test_image_only_export_warns_that_the_app_needs_both_towers(tmp_path: Path) -> None:
    export, demo = make_export(tmp_path, towers=("image",)), make_app(tmp_path)
    result = CliRunner().invoke(app, ["bundle", "ios", "--export", str(export), "--app", str(demo)])
    assert result.exit_code == 0, result.output
    assert "no text encoder" in " ".join(result.stderr.split()) and "no text encoder" not in result.stdout


def make_android_app(root: Path) -> Path:
    module = root / "AndroidApp" / "app"
    (module / "src" / "main").mkdir(parents=True)
    (module / "build.gradle.kts").write_text("plugins {}\n")
    return root / "AndroidApp"


def test_bundle_android_copies_what_android_runtimes_run(tmp_path: Path) -> None:
    export, project = make_export(tmp_path, android=True), make_android_app(tmp_path)
    report = bundle_android(export, project)
    target = project / "app" / "src" / "main" / "assets" / "mobileclip-s0"
    assert report.destination == target and report.platform == "android"
    assert sorted(a.backend for a in report.artifacts) == ["executorch-xnnpack"] * 2 + ["litert"] * 2 + ["onnx"] * 2
    for a in report.artifacts:
        assert sha256_path(target / a.file) == sha256_path(export / a.file)
    assert not list(target.glob("*.mlpackage"))  # Core ML stays out of an Android app
    manifest = json.loads((target / "manifest.json").read_text())
    assert {a["backend"] for a in manifest["artifacts"]} == {"onnx", "executorch-xnnpack", "litert"}
    assert (target / "tokenizer" / "vocab.json").is_file()
    # The same ownership rules as iOS: a second bundle replaces the first, a user's file stops it.
    assert bundle_android(export, project).replaced
    (target / "mine.json").write_text("{}")
    with pytest.raises(UserError, match="mine.json"):
        bundle_android(export, project)
    assert (target / "mine.json").read_text() == "{}"


@pytest.mark.parametrize("layout", ["src/main", "assets", None])
def test_bundle_android_finds_the_assets_folder(tmp_path: Path, layout: str | None) -> None:
    export, app_dir = make_export(tmp_path, android=True), tmp_path / "module"
    if layout:
        (app_dir / layout).mkdir(parents=True)
    result = CliRunner().invoke(app, ["bundle", "android", "--export", str(export), "--app", str(app_dir), "--json"])
    assert result.exit_code == 0, result.output
    expected = {"src/main": app_dir / "src/main/assets/mobileclip-s0", "assets": app_dir / "assets/mobileclip-s0",
                None: app_dir}[layout]
    assert json.loads(result.stdout)["destination"] == str(expected)
    assert (expected / "manifest.json").is_file()


def test_bundle_android_refuses_an_export_without_android_artifacts(tmp_path: Path) -> None:
    export = make_export(tmp_path)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["backend"] == "coreml"]
    (export / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"no artifacts for android; export with -f executorch-xnnpack or -f litert or -f onnx"):
        bundle_android(export, tmp_path / "app")
    assert not (tmp_path / "app").exists()


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
    with pytest.raises(UserError, match=r"no artifacts for ios; export with -f coreai or -f coreml"):
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
    report = json.loads(result.stdout)
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


def test_export_records_the_tokenizer_sha256_that_bundle_checks(tmp_path: Path) -> None:
    """End to end: the export pipeline records each tokenizer file's sha256; bundle accepts the untouched export
    and refuses it once the vocabulary is edited."""
    from helpers import export, registered

    out = tmp_path / "out"
    with registered():
        assert [r.status for r in export(out, ["test-recording:fp32"], towers=("text",), parity=False)] == ["ok"]
        tokenizer = json.loads((out / "manifest.json").read_text())["tokenizer"]
        assert tokenizer["sha256"] == {k: sha256_path(out / tokenizer[k]) for k in ("merges", "vocab")}
        assert bundle_android(out, tmp_path / "app").tokenizer_files == [tokenizer["merges"], tokenizer["vocab"]]
        vocab = out / tokenizer["vocab"]
        vocab.write_text(vocab.read_text(encoding="utf-8").replace('"a</w>"', '"b</w>"', 1), encoding="utf-8")
        with pytest.raises(UserError, match="vocab.json does not match its manifest entry"):
            bundle_android(out, tmp_path / "app2")
    assert not (tmp_path / "app2").exists()
