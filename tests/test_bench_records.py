import json

import pytest
from helpers import ARTIFACT, DEVICE, bench_record

from mobileclip_deploy.bench import records
from mobileclip_deploy.bench.records import Measurement, make_record, validate


def test_schema_file_is_shipped_and_lists_the_fixed_keys():
    schema = records.load_schema()
    assert schema["properties"]["schema"]["enum"] == [records.SCHEMA_ID]
    for key in ("device", "runtime", "artifact", "latency_ms", "samples_ms", "peak_memory_mb", "load_ms",
                "first_inference_ms", "compute_units", "threads", "warmup", "iterations", "batch", "date"):
        assert key in schema["required"]


def test_made_record_is_valid_and_keeps_extra_context():
    rec = bench_record(extra={"manifest_entry": {"file": "x"}})
    assert validate(rec) == []
    assert rec["latency_ms"]["median"] == 2.5 and rec["latency_ms"]["stats_source"] == "samples"
    assert rec["iterations"] == 4 and rec["warmup"] == 5 and rec["batch"] == 1
    assert rec["device"]["cpu_count"] == 2 and rec["manifest_entry"] == {"file": "x"}
    json.dumps(rec)


@pytest.mark.parametrize("mutate, fragment", [
    (lambda r: r.pop("latency_ms"), "missing key 'latency_ms'"),
    (lambda r: r.update(target="windows"), "record.target"),
    (lambda r: r["artifact"].update(sha256="xyz"), "record.artifact.sha256"),
    (lambda r: r.update(threads=True), "record.threads"),
    (lambda r: r.update(samples_ms=[1.0, -2.0]), "record.samples_ms[1]"),
    (lambda r: r["device"].pop("soc"), "missing key 'soc'"),
    (lambda r: r["runtime"].update(name="tflite"), "record.runtime.name"),
    (lambda r: r.update(date="yesterday"), "record.date"),
])
def test_validator_rejects_broken_records(mutate, fragment):
    rec = bench_record()
    mutate(rec)
    errors = validate(rec)
    assert any(fragment in e for e in errors), errors


def test_runner_summary_record_allows_unknown_statistics():
    m = Measurement([], 5.0, 7.0, 1, summary_ms={"median": 3.0, "p90": 4.0, "min": 2.0, "max": 9.0},
                    extra={"iterations": 100})
    rec = make_record(target="android", device=DEVICE, runtime={"name": "onnxruntime"}, artifact=ARTIFACT,
                      measurement=m, threads=4)
    assert validate(rec) == []
    assert rec["latency_ms"]["trimmed_mean"] is None and rec["iterations"] == 100


def test_append_and_read_back(tmp_path):
    path = tmp_path / "r.jsonl"
    records.append_records(path, [bench_record()])
    records.append_records(path, [bench_record(), bench_record()])
    back = records.read_records(path)
    assert len(back) == 3 and all(validate(r) == [] for r in back)
    bad = bench_record()
    del bad["artifact"]
    with pytest.raises(ValueError, match="invalid record"):
        records.append_records(path, [bad])
    assert len(records.read_records(path)) == 3
