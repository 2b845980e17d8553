"""Export recipes: the CLI's choices in a TOML file, so a target (iPhone ANE, Android CPU, ORT) is one flag."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters.backends import all_backends, get_backend

_TOP_KEYS = {"description", "model", "tower", "calibration", "calibration_limit", "formats", "thresholds"}


@dataclass
class Recipe:
    quants: list[str] = field(default_factory=list)  # "FORMAT:SCHEME"
    model: str | None = None  # the variant a recipe was written for (`--quant auto` recipes name module paths of it)
    tower: str | None = None
    calibration: Path | None = None
    calibration_limit: int | None = None
    options: dict[str, dict[str, object]] = field(default_factory=dict)  # backend -> its table's format options
    thresholds: dict[str, float] = field(default_factory=dict)
    # backend -> tower -> module paths a `--quant auto` plan keeps out of the low-bit form (`keep_float` of w8a8,
    # `keep_8bit` of Core ML pal4: the backend's keep_key)
    keep: dict[str, dict[str, list[str]]] = field(default_factory=dict)


def load_recipe(path: Path) -> Recipe:
    """Parse and validate a recipe; relative calibration paths are relative to the recipe file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"recipe {path} is not valid TOML: {exc}") from exc
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise UserError(f"recipe {path}: unknown keys {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    formats = data.get("formats", {})
    if not isinstance(formats, dict) or not formats:
        raise UserError(f"recipe {path} needs a [formats.<name>] table with `schemes = [...]`")
    tower = _typed(path, data, "tower", str)
    if tower not in (None, "image", "text", "both"):
        raise UserError(f"recipe {path}: tower must be image, text or both, not {tower!r}")
    limit = _typed(path, data, "calibration_limit", int)
    if limit is not None and limit < 1:
        raise UserError(f"recipe {path}: calibration_limit must be at least 1")
    recipe = Recipe(model=_typed(path, data, "model", str), tower=tower, calibration_limit=limit, thresholds=dict(_typed(path, data, "thresholds", dict) or {}))
    if "calibration" in data:
        recipe.calibration = (path.parent / _typed(path, data, "calibration", str)).resolve()
    for name, table in formats.items():
        where = f"{path} [formats.{name}]"
        if not isinstance(table, dict):
            raise UserError(f"recipe {where} must be a table with `schemes = [...]`")
        backend = get_backend(name)
        keep_keys = {b.keep_key for b in all_backends().values() if b.keep_key}
        allowed = {"schemes", *keep_keys, *backend.option_defaults}
        bad = set(table) - allowed
        if bad:
            raise UserError(f"recipe {where}: unknown keys {sorted(bad)}; allowed: {sorted(allowed)}")
        schemes = table.get("schemes")
        if not schemes or not isinstance(schemes, list) or not all(isinstance(s, str) for s in schemes):
            raise UserError(f"recipe {where} needs `schemes = [...]` (a list of scheme names)")
        recipe.quants += [f"{name}:{s}" for s in schemes]
        for key in keep_keys & set(table):
            if key != backend.keep_key:
                raise UserError(f"recipe {where}: `{key}` does not apply to {backend.name}"
                                + (f"; {backend.name} takes `{backend.keep_key}`" if backend.keep_key else ""))
            recipe.keep[backend.name] = _keep(where, key, table[key])
        options = {key: _typed(where, table, key, backend.option_types.get(key, str) if default is None
                               else type(default))
                   for key, default in backend.option_defaults.items() if key in table}
        if options:
            recipe.options[backend.name] = options
    return recipe


def _keep(where: str, key: str, table: object) -> dict[str, list[str]]:
    """`[formats.<name>.<key>]`: `image = [...]` / `text = [...]`, module paths written by `--quant auto`."""
    if not isinstance(table, dict) or not all(
            k in ("image", "text") and isinstance(v, list) and all(isinstance(n, str) for n in v)
            for k, v in table.items()):
        raise UserError(f"recipe {where}: `{key}` must be a table of image/text = [module paths]")
    return {k: list(v) for k, v in table.items()}


def _typed(where: object, table: dict, key: str, kind: type):
    """`table[key]` if absent or of type `kind`; anything else is refused with the key's name."""
    value = table.get(key)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        article = "an" if kind.__name__[0] in "aeiou" else "a"
        raise UserError(f"recipe {where}: `{key}` must be {article} {kind.__name__}, not {value!r}")
    return value
