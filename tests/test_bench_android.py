"""Android target against the stand-in adb (tests/fake_adb/adb), which plays a phone on this machine."""

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mobileclip_deploy.bench import android
from mobileclip_deploy.bench.artifacts import Artifact
from mobileclip_deploy.bench.records import read_records, validate
from mobileclip_deploy.errors import UserError

FAKE = Path(__file__).parent / "fake_adb"
DEVICES = Path(__file__).parents[1] / "benchmarks" / "devices"


@pytest.fixture
def phone(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{FAKE}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(tmp_path / "device"))
    monkeypatch.delenv("FAKE_ADB_PROFILE", raising=False)
    monkeypatch.delenv("FAKE_ADB_STATE", raising=False)
    return tmp_path / "device"


def _artifact(tmp_path, backend="executorch-xnnpack", suffix=".pte"):
    path = tmp_path / f"mobileclip-s0_image_{backend}_fp32{suffix}"
    path.write_bytes(b"\0" * 64)
    return Artifact(path, "mobileclip-s0", "image", backend, "fp32")


def test_no_device_fails_clearly(phone, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_STATE", "none")
    with pytest.raises(UserError, match="no Android device attached"):
        android.connect(None)
    with pytest.raises(UserError, match="no Android device with serial X"):
        android.connect("X")


def test_unauthorized_and_missing_adb(phone, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_STATE", "unauthorized")
    with pytest.raises(UserError, match="unauthorized"):
        android.connect("FAKE8PRO0001")
    with pytest.raises(UserError, match="apt-get install adb"):
        android.list_devices("no-such-adb-here")


@pytest.mark.parametrize("profile, big, mask", [("pixel-8.json", [4, 5, 6, 7, 8], "1f0"),
                                                 ("galaxy-s24.json", [2, 3, 4, 5, 6, 7], "fc")])
def test_probe_reads_props_freqs_and_thermal(phone, monkeypatch, profile, big, mask):
    prof = json.loads((DEVICES / profile).read_text())
    monkeypatch.setenv("FAKE_ADB_PROFILE", str(DEVICES / profile))
    info = android.probe(android.connect(None))
    assert info.big_cores == big == prof["big_cores"]
    assert android.cpu_mask(info.big_cores) == mask
    dev = info.record_device()
    assert dev["model"] == prof["props"]["ro.product.model"]
    assert dev["os"].startswith("Android " + prof["props"]["ro.build.version.release"])
    assert prof["props"]["ro.soc.model"] in dev["soc"]
    assert info.thermal_c == prof["thermal_c"]


def test_executor_runner_on_device_pins_big_cores(phone, tmp_path):
    t = android.connect(None)
    info = android.probe(t)
    ((m, extra, threads),) = android.run_on_device(t, _artifact(tmp_path), FAKE / "executor_runner", [5], 2, 6, info)
    assert threads == 5 and extra["cpu_mask"] == "1f0"
    # Three runs of 1, 1 + 2 and 1 + 2 + 6 executions: 21.5 ms first, then 10 ms each.
    assert m.first_inference_ms == 21.5 and m.load_ms == pytest.approx(5.25) and m.warmup == 2
    assert m.latency()["mean"] == pytest.approx(10.0) and m.iterations == 6 and m.samples_ms == []
    log = (phone / "taskset.log").read_text().splitlines()
    name = "mobileclip-s0_image_executorch-xnnpack_fp32.pte"
    assert log == [f"1f0 ./executor_runner --model_path {name} --num_executions {n} --cpu_threads 5"
                   for n in (1, 3, 9)]
    assert not (phone / "data/local/tmp/mobileclip-deploy" / name).exists()  # removed after the run
    assert (phone / "data/local/tmp/mobileclip-deploy/executor_runner").exists()
    assert extra["thermal_c_before"]["BIG"] == 41.2 and extra["cpu_cur_freq_khz_before"]["8"] == 2914000 * 3 // 4


def test_runner_and_artifact_must_match(phone, tmp_path):
    t = android.connect(None)
    with pytest.raises(UserError, match="runs onnxruntime"):
        android.run_on_device(t, _artifact(tmp_path), FAKE / "onnxruntime_perf_test", [1], 0, 5, android.probe(t))
    tool = tmp_path / "my_tool"
    tool.write_text("#!/bin/sh\n")
    with pytest.raises(UserError, match="expected ExecuTorch"):
        android.runner_kind(tool)
    with pytest.raises(UserError, match=r"--runner .*executor_runner does not exist"):
        android.runner_kind(tmp_path / "executor_runner")  # named right, but not there


def test_unauthorized_phone_is_not_reported_as_missing(phone, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_STATE", "unauthorized")
    with pytest.raises(UserError, match=r"no usable Android device: FAKE8PRO0001 \(unauthorized\)\. .*accept the "
                                        "USB-debugging prompt"):
        android.connect(None)


def test_a_hanging_adb_is_one_clear_error(tmp_path, monkeypatch):
    hung = tmp_path / "adb"
    hung.write_text("#!/bin/sh\nexec sleep 30\n")
    hung.chmod(0o755)
    monkeypatch.setattr(android, "ADB_LIST_TIMEOUT_S", 0.5)
    with pytest.raises(UserError, match=r"did not answer within 0.5 s: .*adb kill-server"):
        android.list_devices(str(hung))
    with pytest.raises(UserError, match="did not answer within 0.5 s"):
        android.SubprocessAdb("X", str(hung)).shell("true", timeout=0.5)


def test_cli_android_with_perf_test(phone, tmp_path):
    from mobileclip_deploy.cli import app

    art = _artifact(tmp_path, "onnx", ".onnx")
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(app, ["bench", str(art.path), "--target", "android", "--runner",
                                      str(FAKE / "onnxruntime_perf_test"), "--threads", "2", "--iterations", "30",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    (rec,) = read_records(out)
    assert validate(rec) == []
    assert rec["target"] == "android" and rec["threads"] == 2 and rec["device"]["model"] == "Pixel 8"
    assert rec["latency_ms"]["median"] == pytest.approx(9.3458) and rec["iterations"] == 30
    assert rec["latency_ms"]["mean"] == pytest.approx(9.40745) and rec["first_inference_ms"] == 19.0
    assert "1f0 ./onnxruntime_perf_test -e cpu -m times -r 30 -x 2 -y 1 -s -I" in (phone / "taskset.log").read_text()


def test_cli_android_executor_runner_one_thread_and_all_big_cores(phone, tmp_path):
    from mobileclip_deploy.cli import app

    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(app, ["bench", str(_artifact(tmp_path).path), "--target", "android", "--runner",
                                      str(FAKE / "executor_runner"), "--warmup", "1", "--iterations", "4",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    recs = read_records(out)
    assert [r["threads"] for r in recs] == [1, 5] and all(validate(r) == [] for r in recs)
    rec = recs[0]
    assert rec["latency_ms"]["median"] is None and rec["latency_ms"]["mean"] == pytest.approx(10.0)
    assert rec["device"]["soc"] == "Google Tensor G3" and rec["device"]["big_cores"] == [4, 5, 6, 7, 8]
    assert rec["runtime"] == {"name": "executorch", "version": None, "runner": "executor_runner"}
    assert [r["executions"] for r in rec["runner_runs"]] == [1, 2, 6]


def test_cli_android_without_device(phone, tmp_path, monkeypatch):
    from mobileclip_deploy.cli import app

    monkeypatch.setenv("FAKE_ADB_STATE", "none")
    art = _artifact(tmp_path, "onnx", ".onnx")
    result = CliRunner().invoke(app, ["bench", str(art.path), "--target", "android", "--runner",
                                      str(FAKE / "onnxruntime_perf_test")])
    assert result.exit_code != 0
    assert isinstance(result.exception, UserError) and "no Android device attached" in str(result.exception)


def test_cli_android_runs_tflite_with_the_benchmark_binary(phone, tmp_path):
    """A .tflite goes to LiteRT's benchmark_model (XNNPACK, exact run counts), whatever the binary is called."""
    from mobileclip_deploy.cli import app

    art = _artifact(tmp_path, "litert", ".tflite")
    binary = tmp_path / "my_benchmark_model"
    binary.write_bytes((FAKE / "benchmark_model").read_bytes())
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(app, ["bench", str(art.path), "--target", "android", "--benchmark-binary", str(binary),
                                      "--threads", "1", "--warmup", "2", "--iterations", "30", "-o", str(out)])
    assert result.exit_code == 0, result.output
    (rec,) = read_records(out)
    assert validate(rec) == [] and rec["runtime"] == {"name": "litert", "version": None, "runner": binary.name}
    assert rec["latency_ms"]["mean"] == pytest.approx(21.2345) and rec["latency_ms"]["median"] == pytest.approx(21.1)
    assert rec["first_inference_ms"] == pytest.approx(24.8) and rec["iterations"] == 30
    assert (f"1f0 ./{binary.name} --graph={art.path.name} --num_threads=1 --use_xnnpack=true --num_runs=30 "
            "--min_secs=0 --warmup_runs=2 --warmup_min_secs=0" in (phone / "taskset.log").read_text())


def test_cli_android_tflite_without_benchmark_binary_says_what_to_pass(phone, tmp_path):
    from mobileclip_deploy.cli import app

    art = _artifact(tmp_path, "litert", ".tflite")
    for extra in ([], ["--runner", str(FAKE / "executor_runner")]):
        result = CliRunner().invoke(app, ["bench", str(art.path), "--target", "android", *extra])
        assert result.exit_code != 0
        assert isinstance(result.exception, UserError) and "--benchmark-binary PATH" in str(result.exception)
