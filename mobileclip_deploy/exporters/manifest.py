"""manifest.json: what an export folder holds, written atomically after every finished artifact.

An artifact counts as finished only when the manifest lists it with a matching sha256. Entries carry a
cache key (weights hash, options, tool versions, the package's own code), so a re-run reuses a file only if it
was made the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from mobileclip_deploy.atomic import write_text
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.hashing import package_source_sha256

FORMAT_VERSION = 1
FILENAME = "manifest.json"
_TOOLS = ("mobileclip_deploy", "torch", "numpy")  # beside the converters each backend names (`Backend.tools`)


def package_versions(names: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The installed version of each named distribution that is installed: the one tool-versions collector (manifests,
    bench records, the arm64 guest's pins)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            if name == "mobileclip_deploy":
                from mobileclip_deploy import __version__

                versions[name] = __version__
    return versions


def tool_versions() -> dict[str, str]:
    """Versions of every tool that shapes an artifact, and the sha256 of this package's own code."""
    from mobileclip_deploy.exporters.backends import all_backends

    tools = dict.fromkeys([*_TOOLS, *(t for b in all_backends().values() for t in b.tools)])
    return {"mobileclip_deploy_source": package_source_sha256()[:16], **package_versions(list(tools))}


# `<model>_<tower>_<backend>_<scheme><suffix>`: the one rule for artifact file names, written and parsed here.
_NAME = re.compile(r"^(?P<model>.+?)_(?P<tower>image|text)_(?P<backend>[a-z0-9-]+)_(?P<scheme>[A-Za-z0-9-]+)$")


def artifact_name(model: str, tower: str, backend: str, scheme: str, suffix: str) -> str:
    return f"{model}_{tower}_{backend}_{scheme}{suffix}"


def parse_artifact_name(stem: str) -> dict[str, str] | None:
    """model, tower, backend and scheme of a file name without its suffix, or None if it does not follow the rule."""
    m = _NAME.match(stem)
    return m.groupdict() if m else None


def cache_key(facts: dict[str, Any]) -> str:
    """sha256 of everything that shapes an artifact; equal keys mean the same inputs, options and tools."""
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def preprocessing(variant) -> dict[str, Any]:
    return {
        "image_size": variant.image_size, "resize": "shortest_side", "interpolation": variant.interpolation,
        "antialias": True, "crop": "center", "mean": list(variant.mean), "std": list(variant.std),
        "pixel_range": [0.0, 1.0], "layout": "NCHW", "color": "RGB", "normalization": "inside_model",
    }


def header(variant, checkpoint_sha256: str | None, logit_scale: float, tokenizer: dict[str, Any],
           created: str) -> dict[str, Any]:
    """Top-level fields (same structure as tests/fixtures/manifest_example.json, shared with the Swift side)."""
    return {
        "format_version": FORMAT_VERSION,
        "model": variant.name,
        "display_name": variant.display_name,
        "checkpoint_sha256": checkpoint_sha256,
        "random_weights": checkpoint_sha256 is None,
        "embed_dim": variant.embed_dim,
        "logit_scale": round(min(math.exp(logit_scale), 100.0), 6),
        "created": created,
        "tool_versions": tool_versions(),
        "preprocessing": preprocessing(variant),
        "tokenizer": tokenizer,
        "artifacts": [],
    }


def load(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / FILENAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); move it away or choose another output folder") from exc
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
        raise UserError(f"{path} is not an export manifest; choose another output folder")
    return data


def save(folder: Path, manifest: dict[str, Any]) -> None:
    write_text(Path(folder) / FILENAME, json.dumps(manifest, indent=2) + "\n", replace=True)


def find(manifest: dict[str, Any], file: str) -> dict[str, Any] | None:
    return next((a for a in manifest["artifacts"] if a.get("file") == file), None)


def put(folder: Path, manifest: dict[str, Any], entry: dict[str, Any]) -> None:
    """Replace (or add) the entry for `entry['file']` and save."""
    drop(folder, manifest, entry["file"], save_now=False)
    manifest["artifacts"].append(entry)
    manifest["artifacts"].sort(key=lambda a: a["file"])
    save(folder, manifest)


def drop(folder: Path, manifest: dict[str, Any], file: str, save_now: bool = True) -> None:
    """Remove the entry for `file` (done before a file is replaced, so no entry ever describes another file)."""
    before = len(manifest["artifacts"])
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a.get("file") != file]
    if save_now and len(manifest["artifacts"]) != before:
        save(folder, manifest)
