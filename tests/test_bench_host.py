"""Host target: timing loop, ONNX Runtime runner with a manifest folder, CLI table, thread parsing, iOS refusal."""

import os
import platform
import time

import pytest
from helpers import export_folder
from tiny_artifacts import tiny_pte
from typer.testing import CliRunner

from mobileclip_deploy.bench import artifacts, host, ios
from mobileclip_deploy.bench.records import read_records, validate
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.hashing import sha256_path


def test_measure_separates_load_first_warmup_and_samples():
    calls = []

    def load():
        calls.append("load")
        time.sleep(0.03)
        return lambda: (calls.append("run"), time.sleep(0.005))

    seen = []
    m = host.measure(load, warmup=3, iterations=5, progress=lambda i, n: seen.append((i, n)))
    assert calls == ["load"] + ["run"] * 9  # first + 3 warm-up + 5 timed
    assert len(m.samples_ms) == 5 and m.warmup == 3
    # each span is timed on its own, in milliseconds: loading (30 ms) is not counted as an inference
    assert m.load_ms >= 30 and 5 <= m.first_inference_ms < 30 and all(5 <= s < 30 for s in m.samples_ms)
    assert seen[-1] == (8, 8)
    with pytest.raises(UserError):
        host.measure(load, 0, 0)


def test_measure_time_budget_bounds_slow_runs():
    def load():
        return lambda: time.sleep(0.01)

    m = host.measure(load, warmup=10, iterations=100, max_seconds=0.06)
    assert 5 <= len(m.samples_ms) < 100 and 1 <= m.warmup < 10  # the record keeps the counts actually run
    assert m.peak_memory_mb is None or m.extra["rss_before_load_mb"] <= m.peak_memory_mb
    assert len(host.measure(load, warmup=0, iterations=3, max_seconds=0.001).samples_ms) == 3


def test_each_thread_count_asked_runs_with_that_many_threads(tmp_path, monkeypatch):
    """`--threads 1,all`: one run per count, each ONNX Runtime session made with that many intra-op threads ('all':
    every core here); a count that is not a positive number is refused before anything runs."""
    from mobileclip_deploy.cli import app
    from mobileclip_deploy.runtimes import onnxruntime as ort_runtime

    made = []
    real = ort_runtime.session

    def spy(*args, **kwargs):
        sess = real(*args, **kwargs)
        made.append(sess.get_session_options().intra_op_num_threads)
        return sess

    monkeypatch.setattr(ort_runtime, "session", spy)
    folder, out = export_folder(tmp_path), tmp_path / "r.jsonl"
    cores = os.cpu_count() or 1
    res = CliRunner().invoke(app, ["bench", str(folder), "--no-eager", "--threads", "1,all", "--warmup", "0",
                                   "--iterations", "1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    asked = sorted({1, cores})  # '1,all' on a 1-core machine is one count
    assert sorted(r["threads"] for r in read_records(out)) == sorted(asked * 2)  # two towers each
    assert sorted(made) == sorted(asked * 2)
    refused = CliRunner().invoke(app, ["bench", str(folder), "--no-eager", "--threads", "1,zero", "-o",
                                       str(tmp_path / "z.jsonl")])
    assert refused.exit_code == 2 and "'zero' is not a positive number" in refused.stderr
    assert not (tmp_path / "z.jsonl").exists()


def test_collect_reads_manifest_and_names(tmp_path):
    folder = export_folder(tmp_path)
    arts = artifacts.collect([folder])
    assert [a.tower for a in arts] == ["image", "text"] and arts[0].manifest_entry["scheme"] == "fp32"
    loose = artifacts.collect([folder / "mobileclip-s0_text_onnx_fp32.onnx"])[0]
    assert loose.manifest_entry is not None  # found through the sibling manifest
    with pytest.raises(UserError, match="unknown artifact type"):
        artifacts.collect([tmp_path / "export" / "manifest.json"])


def test_cli_bench_host_onnx(tmp_path):
    from mobileclip_deploy.cli import app

    out = tmp_path / "r.jsonl"
    res = CliRunner().invoke(app, ["bench", str(export_folder(tmp_path)), "--no-eager", "--threads", "1",
                                   "--warmup", "1", "--iterations", "4", "-o", str(out)])
    assert res.exit_code == 0, res.output
    recs = read_records(out)
    assert len(recs) == 2 and all(validate(r) == [] for r in recs)
    assert {r["artifact"]["tower"] for r in recs} == {"image", "text"}
    assert recs[0]["runtime"]["name"] == "onnxruntime" and recs[0]["threads"] == 1
    assert recs[0]["manifest_entry"]["file"] == recs[0]["artifact"]["file"]
    assert recs[0]["artifact"]["sha256"] == recs[0]["manifest_entry"]["sha256"]
    assert "2 record(s) appended" in res.output


def test_cli_bench_eager_baselines(tmp_path):
    from mobileclip_deploy.cli import app

    out = tmp_path / "r.jsonl"
    res = CliRunner().invoke(app, ["bench", "--model", "mobileclip-s0", "--threads", "1", "--warmup", "0",
                                   "--iterations", "1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    recs = read_records(out)
    assert sorted((r["variant"], r["artifact"]["tower"]) for r in recs) == [
        ("folded", "image"), ("folded", "text"), ("train-time", "image"), ("train-time", "text")]
    assert all(r["runtime"]["name"] == "pytorch" and r["random_weights"] for r in recs)


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the message on non-Apple hosts")
def test_ios_target_says_what_is_needed(tmp_path):
    from mobileclip_deploy.cli import app

    with pytest.raises(UserError, match="needs a Mac"):
        ios.require()
    res = CliRunner().invoke(app, ["bench", str(export_folder(tmp_path)), "--target", "ios"])
    assert res.exit_code != 0 and "Xcode" in str(res.exception)
    assert ios.bench_args(tmp_path, "cpuAndNeuralEngine", 5, 50, tmp_path / "o.jsonl")[:6] == [
        "--export", str(tmp_path), "--tower", "both", "--compute-units", "cpuAndNeuralEngine"]
    with pytest.raises(UserError, match="compute-units"):
        ios.bench_args(tmp_path, "gpu", 1, 1, tmp_path / "o")


def test_cli_bench_host_executorch(tmp_path):

    from mobileclip_deploy.cli import app

    pte = tiny_pte(tmp_path / "mobileclip-s0_image_executorch-xnnpack_fp32.pte")
    out = tmp_path / "r.jsonl"
    res = CliRunner().invoke(app, ["bench", str(pte), "--no-eager", "--threads", "1", "--warmup", "1",
                                   "--iterations", "3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    (rec,) = read_records(out)
    assert validate(rec) == [] and rec["runtime"]["name"] == "executorch" and rec["threads"] == 1
    assert rec["artifact"]["backend"] == "executorch-xnnpack" and rec["artifact"]["tower"] == "image"  # from the name
    assert rec["artifact"]["sha256"] == sha256_path(pte) and len(rec["samples_ms"]) == 3
