"""One layer for every runtime that executes an artifact on this host: `load(path, threads) -> Runner`.

Parity, `bench --target host`, `eval --artifacts`, the `auto` searches and `frontier` all load artifacts here, so a
runtime's session options, input dtypes and error messages are written once. A runtime is one module in this package
that calls `register`; nothing else names it. Heavy libraries are imported inside `load`, never at import time.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mobileclip_deploy.errors import UserError


@dataclass
class Runner:
    """A loaded artifact. `run` takes one batch the artifact's shape accepts; `info` says what ran (`name` of the
    runtime, version, provider / delegate / kernel family, partitions) as far as the runtime can tell: it is the
    `runtime` object of bench records."""

    run: Callable[[np.ndarray], np.ndarray]
    input_shape: list[int]
    input_dtype: Any
    info: dict[str, Any] = field(default_factory=dict)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.run(np.ascontiguousarray(x, dtype=self.input_dtype)), dtype=np.float32)

    def batched(self, inputs: np.ndarray) -> np.ndarray:
        """Every row of `inputs`, one batch of the artifact's (fixed) batch size at a time."""
        step = max(1, int(self.input_shape[0]) if self.input_shape else 1)
        return np.concatenate([self(inputs[i : i + step]) for i in range(0, len(inputs), step)])


@dataclass(frozen=True)
class Runtime:
    name: str  # "onnxruntime", "executorch", ...
    suffixes: tuple[str, ...]  # artifact file suffixes it loads
    load: Callable[[Path, int], Runner]  # (path, threads) -> Runner; may raise MissingRuntime
    extra: str | None = None  # the pip extra that installs it, for the "install ..." message
    not_latency: str | None = None  # why its host timings are no latency figure (bench --target host refuses it)
    title: str = ""  # how messages name it ("ONNX Runtime")


class MissingRuntime(UserError):
    """The runtime's Python package is not installed here."""


_RUNTIMES: dict[str, Runtime] = {}
_SCANNED: list[bool] = []  # non-empty once every module of this package has been imported


def register(runtime: Runtime) -> Runtime:
    _RUNTIMES[runtime.name] = runtime
    return runtime


def _discover() -> dict[str, Runtime]:
    """Import every runtime module, scanning the package folder once per process (a module imported directly
    registers only itself)."""
    if not _SCANNED:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _SCANNED.append(True)
    return _RUNTIMES


def get(name: str) -> Runtime:
    runtimes = _discover()
    if name not in runtimes:
        raise UserError(f"unknown runtime {name!r}; known: {', '.join(sorted(runtimes))}")
    return runtimes[name]


def for_suffix(suffix: str) -> Runtime | None:
    return next((r for r in _discover().values() if suffix in r.suffixes), None)


def require(module: str, extra: str | None, what: str) -> Any:
    """Import a runtime's package or refuse with the one command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        hint = f'pip install -c constraints.txt -e ".[{extra}]"' if extra else f"pip install {module}"
        raise MissingRuntime(f"{what} needs the Python package {module!r}, which is not installed; {hint}") from None


@contextlib.contextmanager
def loading(path: Path, runtime: str) -> Iterator[None]:
    """A file the runtime cannot parse (truncated, not a model) is bad input, reported in one line."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - runtimes raise their own types (InvalidProtobuf, RuntimeError)
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{path}: {runtime} cannot load it ({why}); is it truncated or not an artifact? "
                        "Re-export it") from None


def load(path: Path, threads: int = 1, runtime: str | None = None) -> Runner:
    """Load `path` with `runtime` (default: the one that reads its suffix) on `threads` CPU threads."""
    path = Path(path)
    found = get(runtime) if runtime else for_suffix(path.suffix)
    if found is None:
        raise UserError(f"{path.name}: no runtime on this host runs {path.suffix} files")
    with loading(path, found.title or found.name):
        return found.load(path, threads)
