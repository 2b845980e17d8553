import pytest

from mobileclip_deploy.bench.android import executor_runner_measurement
from mobileclip_deploy.bench.parsers import (
    ExecutorRunnerRun,
    RunnerOutputError,
    parse_executor_runner,
    parse_onnxruntime_perf_test,
)
from mobileclip_deploy.bench.records import headline_ms

# executor_runner (examples/portable/executor_runner/executor_runner.cpp) as it logs through ET_LOG: no
# per-execution times, one total over --num_executions.
ET_OUTPUT = """\
I 00:00:00.000150 executorch:executor_runner.cpp:214] Resetting threadpool with num threads = 4
I 00:00:00.002052 executorch:executor_runner.cpp:352] Model file s0.pte is loaded.
I 00:00:00.002086 executorch:executor_runner.cpp:362] Using method forward
I 00:00:00.002092 executorch:executor_runner.cpp:396] Setting up planned buffer 0, size 6422528.
I 00:00:00.007358 executorch:executor_runner.cpp:421] Method loaded.
I 00:00:00.072100 executorch:executor_runner.cpp:491] Model executed successfully 5 time(s) in 65.000000 ms.
I 00:00:00.072110 executorch:executor_runner.cpp:498] 1 outputs: 
OutputX 0: tensor(sizes=[1, 512], [0.1, 0.2, ...])
"""

# onnxruntime_perf_test's summary block (performance_runner.cc).
ORT_OUTPUT = """\
Session creation time cost: 0.0183481 s
First inference time cost: 2 ms
Total inference time cost: 9.40745 s
Total inference requests: 10000
Average inference time cost: 0.940745 ms
Total inference run time: 9.41113 s
Number of inferences per second: 1062.57
Avg CPU usage: 74 %
Peak working set size: 50905088 bytes
Avg CPU usage:74
Peak working set size:50905088
Runs:10000
Min Latency: 0.0007726 s
Max Latency: 0.0018647 s
P50 Latency: 0.0009458 s
P90 Latency: 0.0010243 s
P95 Latency: 0.0010686 s
P99 Latency: 0.0012057 s
P999 Latency: 0.00136 s
"""


def test_executor_runner_total_and_load_time_from_log_timestamps():
    run = parse_executor_runner(ET_OUTPUT)
    assert run.executions == 5 and run.total_ms == 65.0
    assert run.load_ms == pytest.approx(7.208)  # first log line -> "Method loaded."


def test_executor_runner_without_timestamps_has_no_load_time():
    run = parse_executor_runner("Model executed successfully 4 time(s) in 40.0 ms.\n")
    assert (run.executions, run.total_ms, run.load_ms) == (4, 40.0, None)


def test_executor_runner_runs_combine_into_a_warm_mean():
    first, warm = ExecutorRunnerRun(1, 22.5, 7.0), ExecutorRunnerRun(3, 44.0, 7.1)
    timed = ExecutorRunnerRun(13, 144.0, 7.2)
    m = executor_runner_measurement(first, warm, timed, iterations=10)
    lat = m.latency()
    assert lat["mean"] == pytest.approx(10.0) and lat["median"] is None and lat["stats_source"] == "runner_summary"
    assert m.first_inference_ms == 22.5 and m.load_ms == 7.0 and m.warmup == 2 and m.iterations == 10
    assert headline_ms(lat) == pytest.approx(10.0)
    with pytest.raises(RunnerOutputError, match="more --iterations"):
        executor_runner_measurement(first, warm, ExecutorRunnerRun(4, 43.0, 7.0), iterations=1)
    with pytest.raises(RunnerOutputError, match="expected 1/3/13"):
        executor_runner_measurement(first, warm, ExecutorRunnerRun(12, 144.0, 7.0), iterations=10)


def test_executor_runner_failures_are_reported():
    with pytest.raises(RunnerOutputError, match="Loading of method forward failed"):
        parse_executor_runner("E 00:00:00.100000 executorch:executor_runner.cpp:480] Loading of method forward "
                              "failed with status 0x20\n")
    with pytest.raises(RunnerOutputError, match="FileDataLoader"):
        parse_executor_runner("E 00:00:00.000100 executorch:executor_runner.cpp:339] FileDataLoader::from() "
                              "failed: 0x22\n")
    with pytest.raises(RunnerOutputError, match="no timing"):
        parse_executor_runner("Segmentation fault\n")


def test_onnxruntime_perf_test_summary():
    m = parse_onnxruntime_perf_test(ORT_OUTPUT)
    lat = m.latency()
    assert lat["median"] == pytest.approx(0.9458)
    assert lat["p90"] == pytest.approx(1.0243) and lat["min"] == pytest.approx(0.7726)
    assert lat["max"] == pytest.approx(1.8647) and lat["stdev"] is None and lat["mean"] == pytest.approx(0.940745)
    assert m.load_ms == pytest.approx(18.3481) and m.first_inference_ms == 2.0 and m.warmup == 0
    assert m.iterations == 10000
    assert m.peak_memory_mb == pytest.approx(50905088 / 2**20)


def test_onnxruntime_perf_test_garbage():
    with pytest.raises(RunnerOutputError):
        parse_onnxruntime_perf_test("input path is not a valid model\n")
