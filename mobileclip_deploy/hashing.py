"""Content hashes for checkpoints and artifacts (an .mlpackage is a folder, so folders hash too)."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path


def sha256_path(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file is not path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def size_bytes(path: str | os.PathLike[str]) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sources_sha256(root: Path) -> str:
    """sha256 of the Python sources under `root` (relative names and contents, sorted)."""
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


@functools.cache
def package_source_sha256() -> str:
    """This package's code: export caches key on it, because a code change keeps the version number (editable
    installs, unreleased fixes) and must not reuse artifacts the old code made."""
    return sources_sha256(Path(__file__).parent)
