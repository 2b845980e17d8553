"""The backend registry: one module per export format in this package, found at first use.

A backend declares its name, file suffix, schemes and the runtime that executes its artifacts here, and does its own
export, check and op-by-op diagnosis; the pipeline, `verify`, `diagnose`, `bench`, `eval` and `bundle` ask it rather
than comparing backend names.
Adding a format is adding a module here that defines a `Backend` subclass decorated with `@register`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters.schemes import Scheme, did_you_mean


@dataclass
class Build:
    """Everything a backend needs to write and check one artifact."""

    tower: str  # "image" or "text"
    scheme: Scheme
    module: nn.Module  # the affine-folded tower to export (pixels in [0, 1] or int32 tokens -> embedding)
    example: torch.Tensor
    variant: Any  # registry.Variant
    path: Path  # where to write (a temporary path, renamed into place when the job is done)
    work_dir: Path  # scratch space beside it
    calibration: np.ndarray | None  # this tower's calibration inputs, for static schemes
    keep: list[str] | None  # a recipe's modules kept out of the low-bit form (the scheme `auto` rebuilds as)
    options: dict[str, Any]  # this format's options (Backend.option_defaults, resolved per run)
    metadata: dict[str, Any]  # what artifacts embed: variant, tower, scheme, preprocessing, tokenizer, sizes
    inputs: np.ndarray  # the parity inputs of this tower
    context: Any = None  # the run's exporters.context.Context (`auto` searches score on it)
    step: Callable[[str], None] = field(default=lambda _: None)


class Backend:
    """One export format. Subclasses set the class attributes and implement `export`."""

    name: ClassVar[str]  # the `<backend>` of artifact file names and the manifest's `backend`
    suffix: ClassVar[str]  # the artifact's
    suffixes: ClassVar[tuple[str, ...]]  # every suffix its jobs can write, the artifact's first (default: `suffix`)
    schemes: ClassVar[tuple[Scheme, ...]]
    help: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()  # other --format spellings
    runtime: ClassVar[str | None] = None  # the runtimes/ module that executes its artifacts on this host
    check_name: ClassVar[str | None] = None  # the parity record's `check` (default: the runtime's name)
    runtime_target: ClassVar[str] = ""  # the manifest's deployment_target when the backend has no OS target
    platform: ClassVar[str | None] = None  # "ios" or "android": what `bundle` and `bench --target` use it for
    arm64_guest: ClassVar[str | None] = None  # guest_runner runtime that runs it on emulated ARM64 CPUs
    extra: ClassVar[str | None] = None  # the pip extra that installs its converter
    requires: ClassVar[tuple[str, ...]] = ()  # modules its export needs, checked before any work
    tools: ClassVar[tuple[str, ...]] = ()  # distributions whose versions shape its artifacts (manifest, cache key)
    keep_key: ClassVar[str | None] = None  # recipe key of the modules an `auto` plan keeps out of the low-bit form
    option_defaults: ClassVar[dict[str, Any]] = {}  # per-format options it honours (recipe table keys, CLI flags)
    # the types of options whose default is None (a recipe reads those as strings otherwise)
    option_types: ClassVar[dict[str, type]] = {}
    option_refusals: ClassVar[dict[str, str]] = {}  # what to say when an option is given but no format honours it
    auto_titles: ClassVar[dict[str, str]] = {}  # scheme an `auto` plan rebuilds as -> its name in written recipes
    parity_hints: ClassVar[dict[str, str]] = {}  # scheme -> the ways forward when its artifact fails the gate

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "suffix" in cls.__dict__ and "suffixes" not in cls.__dict__:
            cls.suffixes = (cls.suffix,)

    def scheme(self, name: str) -> Scheme:
        for scheme in self.schemes:
            if scheme.name == name:
                return scheme
        raise UserError(f"{self.name} does not support the quantization scheme {name!r}"
                        f"{did_you_mean(name, self.scheme_names)}; {self.name} supports: {', '.join(self.scheme_names)}")

    @property
    def scheme_names(self) -> list[str]:
        return [s.name for s in self.schemes]

    @property
    def rebuilt(self) -> set[str]:
        """The schemes `auto` plans rebuild as: the ones a recipe's `keep_key` list applies to."""
        return {s.rebuilds_as for s in self.schemes if s.rebuilds_as}

    def missing(self) -> str | None:
        """Why this backend cannot export here (its extra is not installed), or None."""
        for module in self.requires:
            try:
                importlib.import_module(module)
            except ImportError:
                return (f"--format {self.name} needs the Python package {module!r}; install the extra: "
                        f'pip install -c constraints.txt -e ".[{self.extra}]"')
        return None

    def resolve(self, scheme: Scheme, options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """This job's options (defaults filled in, checked against the scheme); returns (options, notices)."""
        return {**self.option_defaults, **{k: v for k, v in options.items() if v is not None}}, []

    def honours(self, option: str, tower: str) -> bool:
        """Whether `option` (one of `option_defaults`) means something for this backend's `tower` artifacts."""
        return True

    def files(self, options: dict[str, Any]) -> list[str]:
        """Suffixes of the files one job writes (some of `suffixes`); the first is the artifact `export` writes."""
        return [self.suffix]

    def input_kind(self, build: Build) -> str:
        return "tensor"

    def export(self, build: Build) -> tuple[dict[str, Any], Any]:
        """Write `build.path`; return (the manifest entry's `details`, a handle passed to `check`)."""
        raise NotImplementedError

    def recipe(self, build: Build, handle: Any, facts: dict[str, Any]) -> str | None:
        """A recipe (TOML) that rebuilds this artifact without measuring again, or None: an `auto` plan's (its
        `handle`) by default."""
        if not build.scheme.rebuilds_as:
            return None
        from mobileclip_deploy.exporters.autoquant import recipe_text

        request = build.context.request
        return recipe_text(handle, build.variant.name, request.calibration, request.calibration_limit)

    def checked(self, build: Build, path: Path, parity: dict[str, Any]) -> None:
        """After the gate (passed, not assessable or skipped) and before the file's sha256 goes into the manifest:
        embed what the format carries of the parity record in the artifact at `path` (nothing by default)."""

    def derive(self, build: Build, suffix: str, path: Path) -> None:
        """Write a further file of the job (`files()[1:]`) from the artifact at `build.path`."""
        raise NotImplementedError(f"{self.name} writes no {suffix} files")

    def check(self, build: Build, path: Path, handle: Any) -> tuple[str, np.ndarray, dict[str, Any]]:
        """Run the artifact at `path` on `build.inputs`: (check name, outputs, facts for the parity record)."""
        from mobileclip_deploy import runtimes

        if self.runtime is None:
            raise NotImplementedError(f"{self.name} artifacts cannot run on this host")
        runner = runtimes.load(path, threads=1, runtime=self.runtime)
        return self.check_name or self.runtime, runner.batched(build.inputs), {"runtime": runner.info}

    def diagnose(self, path: Path, module: nn.Module, x: np.ndarray, tol: float, scheme: Scheme) -> dict[str, Any]:
        """Where the artifact at `path` (exported at `scheme`) first departs from `module` (the folded tower it was
        exported from) on input `x`, op by op: verify/diagnose's record (`module` None when nothing departs beyond
        relative error `tol`). Backends whose runtime shows its intermediate values implement it with
        verify/diagnose's machinery; one whose runtime hides them may lower a twin of the artifact that shows them
        (`scheme` says how), or raise UserError saying why it cannot."""
        raise NotImplementedError(f"{self.name} artifacts cannot be compared op by op")

    @property
    def diagnoses(self) -> bool:
        """Whether `diagnose` is implemented: `export` then names the first diverging module of a failed gate."""
        return type(self).diagnose is not Backend.diagnose


def tower_lists(value: Any, key: str, what: str) -> dict[str, list[str]]:
    """A recipe option that maps towers to lists of names (`[formats.<name>.<key>]`), checked."""
    if not isinstance(value, dict) or not all(t in ("image", "text") and isinstance(v, list) and
                                              all(isinstance(n, str) for n in v) for t, v in value.items()):
        raise UserError(f"{key} is a table of towers (image, text) to lists of {what}")
    return value


_BACKENDS: dict[str, Backend] = {}
_SCANNED: list[bool] = []  # non-empty once every module of this package has been imported


def register(cls: type[Backend]) -> type[Backend]:
    _BACKENDS[cls.name] = cls()
    return cls


def all_backends() -> dict[str, Backend]:
    """Every registered backend by name. The package folder is scanned once per process (a module imported directly
    registers only itself); readers of manifests call this per entry."""
    if not _SCANNED:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _SCANNED.append(True)
    return dict(sorted(_BACKENDS.items()))


def get_backend(name: str) -> Backend:
    """Resolve a `--format` value (backend name or alias) or refuse with the list of formats."""
    backends = all_backends()
    aliases = {a: b.name for b in backends.values() for a in b.aliases}
    key = aliases.get(name.lower(), name.lower())
    if key in backends:
        return backends[key]
    known = sorted([*backends, *aliases])
    spelled = ", ".join(f"{a} = {b}" for a, b in sorted(aliases.items()) if "-" in b)
    raise UserError(f"unknown format {name!r}{did_you_mean(name.lower(), known)}; "
                    f"choose from: {', '.join(backends)}" + (f" ({spelled})" if spelled else ""))


def of_artifact(backend: str) -> Backend:
    """The backend a manifest entry or file name names (aliases too), or a one-line refusal."""
    try:
        return get_backend(backend)
    except UserError:
        raise UserError(f"unknown backend {backend!r}") from None


def for_suffix(suffix: str) -> list[Backend]:
    """Every backend whose jobs can write `suffix` files."""
    return [b for b in all_backends().values() if suffix in b.suffixes]


def resolve_pairs(formats: list[str], quants: list[str]) -> list[tuple[Backend, Scheme]]:
    """Turn `--format`/`--quant` values into (backend, scheme) pairs, refusing anything unsupported.

    A plain scheme applies to every requested format and must be supported by each; `FORMAT:SCHEME`
    applies to that format only (and adds it if it was not listed), so mixed requests stay expressible.
    """
    if not formats and not quants:
        raise UserError("nothing to export: give at least one --format and --quant (or a --recipe)")
    backends = [get_backend(f) for f in formats]
    pairs: list[tuple[Backend, Scheme]] = []
    plain = []
    for q in quants:
        if ":" in q:
            fmt, _, scheme = q.partition(":")
            backend = get_backend(fmt)
            pairs.append((backend, backend.scheme(scheme.strip().lower())))
        else:
            plain.append(q.strip().lower())
    if plain and not backends:
        raise UserError(f"--quant {plain[0]} needs a --format to apply to")
    if backends and not plain and not pairs:
        raise UserError("no --quant given; supported: " + "; ".join(
            f"{b.name}: {', '.join(b.scheme_names)}" for b in backends))
    for backend in backends:
        for q in plain:
            pairs.append((backend, backend.scheme(q)))
    bare = [b.name for b in backends if not any(p is b for p, _ in pairs)]
    if bare:
        raise UserError(f"--format {bare[0]} has no scheme: every --quant names another format; add "
                        f"--quant {bare[0]}:SCHEME ({', '.join(get_backend(bare[0]).scheme_names)})")
    unique: list[tuple[Backend, Scheme]] = []
    for pair in pairs:
        if pair not in unique:
            unique.append(pair)
    return unique
