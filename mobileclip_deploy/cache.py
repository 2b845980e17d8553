"""The one rule for where the tool keeps its caches (classifiers, `auto` searches, the arm64 environment)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MOBILECLIP_DEPLOY_CACHE"  # overrides the cache folder (tests, shared machines)


def cache_dir(*parts: str) -> Path:
    """$MOBILECLIP_DEPLOY_CACHE, else $XDG_CACHE_HOME/mobileclip-deploy, else ~/.cache/mobileclip-deploy; `parts` below it."""
    if os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mobileclip-deploy"
    return root.joinpath(*parts)
