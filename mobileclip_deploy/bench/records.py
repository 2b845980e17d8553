"""The benchmark record (JSON lines): one schema shared by the Python targets and the Swift runner.

The schema is shipped as package data (`data/bench_record.schema.json`) so the Swift side and
users' own tools can validate against the same file. `jsonschema` is not a dependency, so
`validate` implements the small subset of JSON Schema that file uses (type, enum, required,
properties, items, minimum, pattern).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mobileclip_deploy.atomic import check_destination, write_text
from mobileclip_deploy.bench.stats import STAT_KEYS, summarize
from mobileclip_deploy.errors import UserError

SCHEMA_ID = "mobileclip-deploy/bench-record/v1"


def load_schema() -> dict[str, Any]:
    text = resources.files("mobileclip_deploy").joinpath("data/bench_record.schema.json").read_text("utf-8")
    return json.loads(text)


@dataclass
class Measurement:
    """What one timed run produced, before the context is attached."""

    samples_ms: list[float]
    load_ms: float | None
    first_inference_ms: float | None
    warmup: int
    peak_memory_mb: float | None = None
    # Set when a device runner only reports a summary (e.g. onnxruntime_perf_test percentiles).
    summary_ms: dict[str, float | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def iterations(self) -> int:
        if self.samples_ms:
            return len(self.samples_ms)
        return int(self.extra.get("iterations", 0))

    def latency(self) -> dict[str, Any]:
        if self.samples_ms:
            return {**summarize(self.samples_ms), "stats_source": "samples"}
        summary = self.summary_ms or {}
        if summary.get("median") is None and summary.get("mean") is None:
            raise ValueError("measurement has neither samples nor a runner summary with a median or mean")
        return {**{k: summary.get(k) for k in STAT_KEYS}, "stats_source": "runner_summary"}


def headline_ms(latency: dict[str, Any]) -> float:
    """The one number tables and plots use: the median, or the mean when a runner reports only that."""
    value = latency["median"] if latency.get("median") is not None else latency.get("mean")
    if value is None:
        raise ValueError("latency has neither a median nor a mean")
    return float(value)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def make_record(
    *,
    target: str,
    device: dict[str, Any],
    runtime: dict[str, Any],
    artifact: dict[str, Any],
    measurement: Measurement,
    threads: int | None,
    compute_units: str | None = None,
    batch: int = 1,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a schema-valid record; `extra` keys are added after the fixed ones."""
    record: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "date": now_iso(),
        "target": target,
        "device": {**{k: device.get(k) for k in ("model", "os", "soc", "name")}, **device},
        "runtime": {"version": None, **runtime},
        "compute_units": compute_units,
        "threads": threads,
        "artifact": {**{k: artifact.get(k) for k in ("file", "sha256", "model", "tower", "backend", "scheme")}, **artifact},
        "batch": batch,
        "warmup": measurement.warmup,
        "iterations": measurement.iterations,
        "load_ms": measurement.load_ms,
        "first_inference_ms": measurement.first_inference_ms,
        "latency_ms": measurement.latency(),
        "samples_ms": [round(x, 6) for x in measurement.samples_ms],
        "peak_memory_mb": measurement.peak_memory_mb,
    }
    record.update(measurement.extra)
    record.update(extra or {})
    return record


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _type_ok(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _JSON_TYPES[name])


def _check(value: Any, schema: dict[str, Any], where: str, errors: list[str]) -> None:
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_type_ok(value, n) for n in names):
            errors.append(f"{where}: expected {'|'.join(names)}, got {type(value).__name__}")
            return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not one of {schema['enum']}")
    if value is None:
        return
    if "minimum" in schema and isinstance(value, (int, float)) and value < schema["minimum"]:
        errors.append(f"{where}: {value} < {schema['minimum']}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}: missing key {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, f"{where}.{key}", errors)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{where}[{i}]", errors)


def validate(record: dict[str, Any], schema: dict[str, Any] | None = None) -> list[str]:
    """Return every violation of the schema (empty list: valid)."""
    errors: list[str] = []
    _check(record, schema or load_schema(), "record", errors)
    return errors


def check_appendable(path: str | Path) -> Path:
    """Refuse, before measuring, a destination that records cannot be appended to: under a file, a folder, or an
    existing file that is not JSON lines of objects (a user's other file is never rewritten)."""
    path = check_destination(path, "--output")
    if path.is_file():
        try:
            lines = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
        except (UnicodeDecodeError, json.JSONDecodeError):
            lines = None
        if lines is None or not all(isinstance(line, dict) for line in lines):
            raise UserError(f"--output {path} exists and is not a JSON-lines records file; refusing to append to it "
                            "(choose another file)")
    return path


def append_records(path: str | Path, records: list[dict[str, Any]]) -> Path:
    """Append records to a JSON-lines file; the whole file is rewritten atomically."""
    path = Path(path)
    for rec in records:
        problems = validate(rec)
        if problems:
            raise ValueError("refusing to write an invalid record: " + "; ".join(problems))
    old = path.read_text("utf-8") if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    new = "".join(json.dumps(r, sort_keys=False) + "\n" for r in records)
    return write_text(path, old + new, replace=True)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    lines = Path(path).read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
