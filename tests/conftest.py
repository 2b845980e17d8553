"""Shared fixtures for the test suite."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The reference data folder: `$MOBILECLIP_SHARED`, else `../shared` next to the repository."""
    path = Path(os.environ.get("MOBILECLIP_SHARED") or REPO_ROOT.parent / "shared")
    if not path.is_dir():  # a missing fixture folder must fail the run, not skip half of it
        pytest.fail(f"reference data not found at {path} (set MOBILECLIP_SHARED)", pytrace=False)
    return path


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """`tmp_path_factory.mktemp` for a module's fixtures, whose folders go when the module ends: full-size exports
    left until the session ends filled 12 GB per run, and a CI machine with less free disk failed on it."""
    made: list[Path] = []

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run a module's forward passes on one thread: on the shared 2-core machine, 2 threads contend badly
    (a forward pass was measured 4x slower with 2 threads than with 1 under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def s0_checkpoint(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MobileCLIP-S0 golden weights (recipe in ../shared/README.md) saved as an official .pt file."""
    import torch
    from goldens import make_golden_state_dict, manifest_path

    path = tmp_path_factory.mktemp("s0") / "mobileclip_s0.pt"
    torch.save(make_golden_state_dict(manifest_path(shared_dir, "mobileclip_s0")), path)
    return path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Caches (the zero-shot classifier) go to a temporary folder, never to the user's ~/.cache."""
    monkeypatch.setenv("MOBILECLIP_DEPLOY_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
