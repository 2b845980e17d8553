"""Shared fixtures for the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The reference data folder: `$MOBILECLIP_SHARED`, else `../shared` next to the repository."""
    path = Path(os.environ.get("MOBILECLIP_SHARED") or REPO_ROOT.parent / "shared")
    if not path.is_dir():
        pytest.skip(f"reference data not found at {path} (set MOBILECLIP_SHARED)")
    return path
