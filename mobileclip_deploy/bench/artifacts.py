"""What is being benchmarked: artifacts from an export folder's manifest, or loose files.

Records carry the artifact's sha256 and its manifest entry so a number can always be traced back
to the exact file that produced it; an artifact listed in a manifest is used only if its sha256 still matches
(`verified`), so a changed file is never measured or evaluated as the manifest's artifact.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters.backends import Backend, all_backends, of_artifact
from mobileclip_deploy.exporters.manifest import parse_artifact_name
from mobileclip_deploy.hashing import sha256_path

COMPILED_COREML = ".mlmodelc"  # Xcode's compiled form of an .mlpackage: benchmarked on iOS like its source


@dataclass
class Artifact:
    path: Path
    model: str | None
    tower: str | None
    backend: str
    scheme: str | None
    manifest_entry: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def input_shape(self) -> list[int] | None:
        if self.manifest_entry and self.manifest_entry.get("inputs"):
            return list(self.manifest_entry["inputs"][0]["shape"])
        return None

    @property
    def backend_info(self) -> Backend:
        return of_artifact(self.backend)

    @property
    def runtime(self) -> str | None:
        """The runtime that executes this artifact on this host (None: it cannot run here)."""
        return self.backend_info.runtime

    @cached_property
    def sha256(self) -> str:
        """Hashed once per run, however many thread counts the artifact is timed at."""
        return sha256_path(self.path)

    def info(self) -> dict[str, Any]:
        """The record's `artifact` object."""
        return {
            "file": self.path.name,
            "sha256": self.sha256,
            "model": self.model,
            "tower": self.tower,
            "backend": self.backend,
            "scheme": self.scheme,
        }


def check_sha256(path: Path, expected: object, actual: Callable[[], str]) -> None:
    """The one reuse check of a file an export wrote (artifact or tokenizer asset): refuse it unless its sha256 is
    the one the manifest recorded (edited, truncated, replaced, or never recorded)."""
    if not expected:
        raise UserError(f"the manifest entry for {path.name} has no sha256, so the file cannot be checked; "
                        "re-export it with `mobileclip-deploy export`")
    if (digest := actual()) != expected:
        raise UserError(f"{path} does not match its manifest entry (sha256 {digest[:12]}, manifest "
                        f"says {str(expected)[:12]}): the file was changed after export; re-export it or restore it")


def verified(artifact: Artifact) -> Artifact:
    """Refuse an artifact whose file is not the one its manifest entry describes."""
    if artifact.manifest_entry is not None:
        check_sha256(artifact.path, artifact.manifest_entry.get("sha256"), lambda: artifact.sha256)
    return artifact


def load_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "manifest.json"
    if not path.is_file():
        raise UserError(f"{folder} has no manifest.json; pass artifact files directly or an export folder")
    return json.loads(path.read_text("utf-8"))


def _suffixes() -> dict[str, str]:
    """Artifact suffix -> the first backend writing it (a loose file's backend, unless its name or manifest says)."""
    found: dict[str, str] = {}
    for backend in sorted(all_backends().values(), key=lambda b: b.runtime is None):  # runnable ones first
        for suffix in backend.suffixes:
            found.setdefault(suffix, backend.name)
    return {**found, COMPILED_COREML: found.get(".mlpackage", "coreml")}


def _from_file(path: Path) -> Artifact:
    suffixes = _suffixes()
    backend = suffixes.get(path.suffix)
    if backend is None:
        raise UserError(f"{path.name}: unknown artifact type (expected one of {', '.join(suffixes)})")
    manifest_path = path.parent / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text("utf-8"))
        for entry in manifest.get("artifacts", []):
            if entry.get("file") == path.name:
                return verified(Artifact(path, entry.get("model"), entry.get("tower"),
                                         entry.get("backend", backend), entry.get("scheme"), entry, manifest))
    m = parse_artifact_name(path.name[: -len(path.suffix)])
    if m:
        return Artifact(path, m["model"], m["tower"], m["backend"], m["scheme"])
    return Artifact(path, None, None, backend, None)


def collect(paths: list[Path]) -> list[Artifact]:
    """Expand export folders into their manifest's artifacts (status ok) and keep loose files."""
    out: list[Artifact] = []
    for path in paths:
        if not path.exists():
            raise UserError(f"{path} does not exist")
        if path.is_dir() and path.suffix not in _suffixes():
            out += folder_artifacts(path)
        else:
            out.append(_from_file(path))
    return out


def folder_artifacts(folder: Path, keep: Callable[[dict[str, Any]], bool] = lambda entry: True,
                     manifest: dict[str, Any] | None = None) -> list[Artifact]:
    """The finished (status ok) artifacts of an export folder that `keep` accepts, each checked against its
    manifest sha256: the one reuse check of every reader of an export (bench, eval, bundle)."""
    manifest = manifest if manifest is not None else load_manifest(folder)
    out = []
    for entry in manifest.get("artifacts", []):
        if entry.get("status", "ok") != "ok" or not keep(entry):
            continue
        file = folder / entry["file"]
        if not file.exists():
            raise UserError(f"manifest lists {entry['file']} but {file} is missing")
        out.append(verified(Artifact(file, entry.get("model"), entry.get("tower"), entry["backend"],
                                     entry.get("scheme"), entry, manifest)))
    return out


TOKENIZER_FILES = ("merges", "vocab")  # the manifest's `tokenizer` keys naming files (paths relative to the export)


def tokenizer_files(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """The tokenizer files an export lists, each present and checked against the sha256 the manifest recorded for
    it (`tokenizer.sha256.<key>`), like every artifact: an app never receives a vocabulary changed after export."""
    tokenizer = manifest.get("tokenizer") or {}
    listed = {key: str(tokenizer[key]) for key in TOKENIZER_FILES if tokenizer.get(key)}
    absent = [name for name in listed.values() if not (folder / name).is_file()]
    if absent:
        raise UserError(f"tokenizer files listed in the manifest are missing from {folder}: {', '.join(absent)}")
    recorded = tokenizer.get("sha256") if isinstance(tokenizer.get("sha256"), dict) else {}
    for key, name in listed.items():
        check_sha256(folder / name, recorded.get(key), lambda name=name: sha256_path(folder / name))
    return list(listed.values())


def select(artifacts: list[Artifact], backends: set[str] | None = None, schemes: set[str] | None = None,
           towers: set[str] | None = None) -> list[Artifact]:
    return [
        a for a in artifacts
        if (not backends or a.backend in backends)
        and (not schemes or a.scheme in schemes)
        and (not towers or a.tower in towers)
    ]
