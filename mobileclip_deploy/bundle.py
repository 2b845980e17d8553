"""Copy an export's Core ML encoders, tokenizer and manifest into the iOS demo app (or any folder)."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mobileclip_deploy.atomic import atomic_path
from mobileclip_deploy.errors import UserError

# What MobileCLIPKit loads: Core ML programs, and Core AI assets (iOS 27; the app picks Core AI there, Core ML below).
APP_SUFFIXES = (".mlpackage", ".mlmodelc", ".aimodel")
# Written into every bundle: only a folder carrying it is ever replaced by a later `bundle`.
MARKER = ".mobileclip-bundle"


@dataclass(frozen=True)
class BundledArtifact:
    """One encoder the app will offer."""

    model: str
    tower: str
    scheme: str
    file: str
    size_bytes: int


@dataclass(frozen=True)
class BundleReport:
    model: str
    destination: Path
    artifacts: list[BundledArtifact]
    tokenizer_files: list[str] = field(default_factory=list)
    replaced: bool = False  # an earlier bundle stood at the destination and was replaced

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["destination"] = str(self.destination)
        return data


def looks_like_demo_app(app_dir: Path) -> bool:
    """The demo app keeps bundled exports under Resources/Models; a plain folder takes them directly."""
    return (app_dir / "Resources").is_dir() or (app_dir / "project.yml").is_file()


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _read_manifest(export_dir: Path) -> dict[str, Any]:
    if not export_dir.is_dir():
        raise UserError(f"export folder {export_dir} does not exist (run `mobileclip-deploy export` first)")
    manifest_path = export_dir / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"{export_dir} has no manifest.json; is it a folder written by `mobileclip-deploy export`?")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or "model" not in manifest or "artifacts" not in manifest:
        raise UserError(f"{manifest_path} lacks 'model' or 'artifacts'; re-export with this version")
    return manifest


def _coreml_artifacts(manifest: dict[str, Any], export_dir: Path) -> list[dict[str, Any]]:
    """Core ML artifacts that exported successfully; a listed file that is missing means a broken export."""
    chosen = [
        a
        for a in manifest["artifacts"]
        if _is_ios(a) and str(a.get("file", "")).endswith(APP_SUFFIXES)
        and a.get("status", "ok") == "ok"
    ]
    if not chosen:
        raise UserError(
            f"{export_dir} has no Core ML artifacts (backend 'coreml', .mlpackage or .mlmodelc) or Core AI assets "
            "(backend 'coreai', .aimodel); export with the coreml or coreai backend before bundling for iOS"
        )
    missing = [a["file"] for a in chosen if not (export_dir / a["file"]).exists()]
    if missing:
        raise UserError(f"manifest lists Core ML files missing from {export_dir}: {', '.join(missing)}")
    return chosen


def _is_ios(artifact: dict[str, Any]) -> bool:
    from mobileclip_deploy.exporters.backends import all_backends

    backend = all_backends().get(str(artifact.get("backend")))
    return backend is not None and backend.platform == "ios"


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def bundle_ios(export_dir: Path, app_dir: Path) -> BundleReport:
    """Copy the Core ML encoders, tokenizer files and a filtered manifest of `export_dir` into `app_dir`.

    Into the demo app this goes to `<app>/Resources/Models/<model>/`, which the app scans at launch;
    any other folder receives the files directly. The destination is written atomically, so an
    interrupted copy never leaves a half-bundled model for Xcode to pick up, and it replaces only an
    empty folder or an earlier bundle (marked by MARKER): never a folder of the user's.
    """
    export_dir, app_dir = Path(export_dir), Path(app_dir)
    manifest = _read_manifest(export_dir)
    artifacts = _coreml_artifacts(manifest, export_dir)
    model = str(manifest["model"])

    tokenizer = manifest.get("tokenizer") or {}
    tokenizer_files = [tokenizer[key] for key in ("merges", "vocab") if tokenizer.get(key)]
    absent = [name for name in tokenizer_files if not (export_dir / name).is_file()]
    if absent:
        raise UserError(f"tokenizer files listed in the manifest are missing from {export_dir}: {', '.join(absent)}")

    if app_dir.exists() and not app_dir.is_dir():
        raise UserError(f"--app {app_dir} is a file; give the demo app folder or a folder to copy into")
    destination = app_dir / "Resources" / "Models" / model if looks_like_demo_app(app_dir) else app_dir
    replaced = _check_destination(destination)
    with atomic_path(destination, replace=True) as tmp:
        tmp.mkdir(parents=True)
        (tmp / MARKER).write_text(f"bundled by mobileclip-deploy from {export_dir.resolve()}\n", encoding="utf-8")
        for name in [a["file"] for a in artifacts] + tokenizer_files:
            _copy(export_dir / name, tmp / name)
        filtered = {**manifest, "artifacts": artifacts}
        (tmp / "manifest.json").write_text(json.dumps(filtered, indent=2) + "\n", encoding="utf-8")

    offered = [
        BundledArtifact(
            model=str(a.get("model", model)),
            tower=str(a["tower"]),
            scheme=str(a["scheme"]),
            file=a["file"],
            size_bytes=_size(destination / a["file"]),
        )
        for a in artifacts
    ]
    return BundleReport(model=model, destination=destination, artifacts=offered, tokenizer_files=tokenizer_files,
                        replaced=replaced)


def _check_destination(destination: Path) -> bool:
    """Only an empty folder or an earlier bundle (it carries MARKER) may be replaced; returns whether one was."""
    if not destination.exists():
        return False
    if not destination.is_dir():
        raise UserError(f"{destination} is a file; refusing to replace it (give a folder)")
    if (destination / MARKER).is_file():
        return True
    if any(destination.iterdir()):
        raise UserError(
            f"{destination} already holds files that `bundle` did not put there; refusing to replace it "
            "(give an empty folder, a new one, or the demo app folder)"
        )
    return False
