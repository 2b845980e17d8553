"""Export recipes: the CLI's choices in a TOML file, so a target (iPhone ANE, Android CPU, ORT) is one flag."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mobileclip_deploy.errors import UserError

_TOP_KEYS = {"description", "tower", "calibration", "calibration_limit", "formats", "thresholds"}
_FORMAT_KEYS = {"schemes", "deployment_target", "image_input", "ort"}


@dataclass
class Recipe:
    quants: list[str] = field(default_factory=list)  # "FORMAT:SCHEME"
    tower: str | None = None
    calibration: Path | None = None
    calibration_limit: int | None = None
    deployment_target: str | None = None
    image_input: bool | None = None
    ort: bool | None = None
    thresholds: dict[str, float] = field(default_factory=dict)


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
    recipe = Recipe(tower=data.get("tower"), calibration_limit=data.get("calibration_limit"),
                    thresholds=dict(data.get("thresholds", {})))
    if "calibration" in data:
        recipe.calibration = (path.parent / data["calibration"]).resolve()
    for name, table in formats.items():
        bad = set(table) - _FORMAT_KEYS
        if bad:
            raise UserError(f"recipe {path} [formats.{name}]: unknown keys {sorted(bad)}; allowed: {sorted(_FORMAT_KEYS)}")
        schemes = table.get("schemes")
        if not schemes or not isinstance(schemes, list):
            raise UserError(f"recipe {path} [formats.{name}] needs `schemes = [...]`")
        recipe.quants += [f"{name}:{s}" for s in schemes]
        for key in ("deployment_target", "image_input", "ort"):
            if key in table:
                setattr(recipe, key, table[key])
    return recipe
