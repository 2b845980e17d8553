"""Copy an export's encoders, tokenizer and manifest into an app: Core ML into the iOS demo app, ONNX /
ExecuTorch / LiteRT into an Android app's assets (or into any folder).

Every artifact is checked against its manifest sha256 before it is copied (the reuse check bench and eval use),
the destination is written atomically, and only an earlier bundle is ever replaced, and only when it holds
nothing but what that bundle wrote: a file the user added there is named and kept, never deleted.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mobileclip_deploy.atomic import atomic_path, check_folder
from mobileclip_deploy.bench.artifacts import TOKENIZER_FILES, folder_artifacts
from mobileclip_deploy.bench.artifacts import tokenizer_files as checked_tokenizer_files
from mobileclip_deploy.errors import UserError

# Written into every bundle: only a folder carrying it is ever replaced by a later `bundle`.
MARKER = ".mobileclip-bundle"


def platform_of(backend: str) -> str | None:
    """The app platform whose apps load this backend's artifacts (the registry's `Backend.platform`)."""
    from mobileclip_deploy.exporters.backends import all_backends

    found = all_backends().get(backend)
    return found.platform if found is not None else None


def backends_for(platform: str) -> list[str]:
    from mobileclip_deploy.exporters.backends import all_backends

    return [b.name for b in all_backends().values() if b.platform == platform]


@dataclass(frozen=True)
class BundledArtifact:
    """One encoder the app will offer."""

    model: str
    tower: str
    backend: str
    scheme: str
    file: str
    size_bytes: int


@dataclass(frozen=True)
class BundleReport:
    model: str
    platform: str
    destination: Path
    artifacts: list[BundledArtifact]
    tokenizer_files: list[str] = field(default_factory=list)
    replaced: bool = False  # an earlier bundle stood at the destination and was replaced
    missing_towers: list[str] = field(default_factory=list)  # the demo apps need an image and a text encoder

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["destination"] = str(self.destination)
        return data


def looks_like_demo_app(app_dir: Path) -> bool:
    """The demo app keeps bundled exports under Resources/Models; a plain folder takes them directly."""
    return (app_dir / "Resources").is_dir() or (app_dir / "project.yml").is_file()


def android_assets(app_dir: Path) -> Path | None:
    """The assets folder of an Android app module (`src/main/assets`), of a project's `app` module, or a bare
    `assets/` folder; None for a plain folder."""
    for main in (app_dir / "src" / "main", app_dir / "app" / "src" / "main"):
        if main.is_dir():
            return main / "assets"
    return app_dir / "assets" if (app_dir / "assets").is_dir() else None


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


_NEEDS = {"ios": "export with the coreml backend (on Linux or macOS)",
          "android": "export with -f onnx, -f executorch or -f litert"}


def _platform_artifacts(manifest: dict[str, Any], export_dir: Path, platform: str) -> list[dict[str, Any]]:
    """The platform's finished artifacts, each verified against its manifest sha256."""
    chosen = folder_artifacts(export_dir, lambda e: platform_of(str(e.get("backend"))) == platform, manifest)
    if not chosen:
        formats = " or ".join(f"-f {b}" for b in backends_for(platform))
        raise UserError(f"{export_dir} has no artifacts for {platform}; export with {formats} before bundling for "
                        f"{platform}")
    return [a.manifest_entry for a in chosen]


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def _owned(bundle: Path) -> set[str]:
    """What an earlier bundle wrote: the marker, its manifest and the files that manifest lists."""
    owned = {MARKER, "manifest.json"}
    try:
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        owned |= {str(a["file"]) for a in manifest.get("artifacts", [])}
        owned |= {str(v) for k, v in (manifest.get("tokenizer") or {}).items() if k in TOKENIZER_FILES and v}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass  # a damaged manifest owns nothing: every other file counts as the user's
    return owned


def _foreign(bundle: Path) -> list[str]:
    """Files in an earlier bundle that it did not write (an owned folder, e.g. an .mlpackage, owns its files)."""
    owned = _owned(bundle)
    out = []
    for path in sorted(bundle.rglob("*")):
        rel = path.relative_to(bundle).as_posix()
        inside_owned = any(rel == o or rel.startswith(o + "/") for o in owned)
        leads_to_owned = path.is_dir() and any(o.startswith(rel + "/") for o in owned)
        if not inside_owned and not leads_to_owned and not path.is_dir():
            out.append(rel)
    return out


def _check_destination(destination: Path) -> bool:
    """Only an empty folder or an earlier bundle (it carries MARKER) holding nothing but its own files may be
    replaced; returns whether an earlier bundle was."""
    if not destination.exists():
        check_folder(destination)
        return False
    if not destination.is_dir():
        raise UserError(f"{destination} is a file; refusing to replace it (give a folder)")
    check_folder(destination.parent)  # the swap writes beside it
    check_folder(destination)
    if (destination / MARKER).is_file():
        foreign = _foreign(destination)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise UserError(f"{destination} holds an earlier bundle and files `bundle` did not write ({shown}); "
                            "refusing to replace it, since that would delete them: move them out of the folder "
                            "and run again (nothing was changed)")
        return True
    if any(destination.iterdir()):
        raise UserError(
            f"{destination} already holds files that `bundle` did not put there; refusing to replace it "
            "(give an empty folder, a new one, or the app folder)"
        )
    return False


def bundle(export_dir: Path, destination: Path, platform: str) -> BundleReport:
    """Copy the platform's encoders and tokenizer files (each sha256-checked) and a manifest listing only those
    encoders into `destination`, atomically: an interrupted copy never leaves a half-bundled model."""
    export_dir, destination = Path(export_dir), Path(destination)
    manifest = _read_manifest(export_dir)
    artifacts = _platform_artifacts(manifest, export_dir, platform)
    model = str(manifest["model"])

    tokenizer_files = checked_tokenizer_files(export_dir, manifest)

    replaced = _check_destination(destination)
    with atomic_path(destination, replace=True) as tmp:
        tmp.mkdir(parents=True)
        (tmp / MARKER).write_text(f"bundled by mobileclip-deploy from {export_dir.resolve()}\n", encoding="utf-8")
        for name in [a["file"] for a in artifacts] + tokenizer_files:
            _copy(export_dir / name, tmp / name)
        filtered = {**manifest, "artifacts": artifacts}
        (tmp / "manifest.json").write_text(json.dumps(filtered, indent=2) + "\n", encoding="utf-8")

    offered = [BundledArtifact(model=str(a.get("model", model)), tower=str(a["tower"]), backend=str(a["backend"]),
                               scheme=str(a["scheme"]), file=a["file"], size_bytes=_size(destination / a["file"]))
               for a in artifacts]
    missing = sorted({"image", "text"} - {a.tower for a in offered})
    return BundleReport(model=model, platform=platform, destination=destination, artifacts=offered,
                        tokenizer_files=tokenizer_files, replaced=replaced, missing_towers=missing)


def _app_folder(app_dir: Path) -> Path:
    if app_dir.exists() and not app_dir.is_dir():
        raise UserError(f"--app {app_dir} is a file; give the app folder or a folder to copy into")
    return app_dir


def bundle_ios(export_dir: Path, app_dir: Path) -> BundleReport:
    """Core ML encoders into the iOS demo app's `Resources/Models/<model>/` (scanned at launch), or directly into
    any other folder."""
    app_dir = _app_folder(Path(app_dir))
    model = str(_read_manifest(Path(export_dir))["model"])
    destination = app_dir / "Resources" / "Models" / model if looks_like_demo_app(app_dir) else app_dir
    return bundle(export_dir, destination, "ios")


def bundle_android(export_dir: Path, app_dir: Path) -> BundleReport:
    """ONNX / ExecuTorch / LiteRT encoders into an Android app's `assets/<model>/` (`src/main/assets` of a module,
    or of a project's `app` module), or directly into any other folder."""
    app_dir = _app_folder(Path(app_dir))
    model = str(_read_manifest(Path(export_dir))["model"])
    assets = android_assets(app_dir)
    return bundle(export_dir, assets / model if assets is not None else app_dir, "android")
