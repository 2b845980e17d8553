import pytest

from mobileclip_deploy.bench.parsers import RunnerOutputError, parse_executor_runner, parse_onnxruntime_perf_test

# Lines as executor_runner (examples/portable/executor_runner) logs them through ET_LOG.
ET_OUTPUT = """\
I 00:00:00.000150 executorch:executor_runner.cpp:283] Resetting threadpool with num threads = 4
I 00:00:00.002052 executorch:executor_runner.cpp:370] Model file s0.pte is loaded.
I 00:00:00.002086 executorch:executor_runner.cpp:380] Using method forward
I 00:00:00.002092 executorch:executor_runner.cpp:431] Setting up CPU planned buffer 0, size 6422528.
I 00:00:00.007300 executorch:executor_runner.cpp:489] Model loaded in 5.208000 ms.
I 00:00:00.030000 executorch:executor_runner.cpp:640] Iteration 1 of 5: 22.500000 ms
I 00:00:00.041000 executorch:executor_runner.cpp:640] Iteration 2 of 5: 11.000000 ms
I 00:00:00.052000 executorch:executor_runner.cpp:640] Iteration 3 of 5: 10.500000 ms
I 00:00:00.062000 executorch:executor_runner.cpp:640] Iteration 4 of 5: 10.250000 ms
I 00:00:00.072000 executorch:executor_runner.cpp:640] Iteration 5 of 5: 10.750000 ms
I 00:00:00.072100 executorch:executor_runner.cpp:648] Model executed successfully 5 time(s) in 65.000000 ms.
I 00:00:00.072110 executorch:executor_runner.cpp:655] 1 outputs: 
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


def test_executor_runner_iterations_split_into_first_warmup_and_samples():
    m = parse_executor_runner(ET_OUTPUT, warmup=1)
    assert m.load_ms == pytest.approx(5.208)
    assert m.first_inference_ms == 22.5
    assert m.samples_ms == [10.5, 10.25, 10.75]
    assert m.latency()["median"] == 10.5


def test_executor_runner_total_only_is_a_summary():
    text = "I 00:00:01.5 executorch:executor_runner.cpp:200] Model executed successfully 4 time(s) in 40.0 ms.\n"
    m = parse_executor_runner(text, warmup=0)
    lat = m.latency()
    assert lat["median"] == 10.0 and lat["stats_source"] == "runner_summary" and m.iterations == 4


def test_executor_runner_failures_are_reported():
    with pytest.raises(RunnerOutputError, match="Loading of method forward failed"):
        parse_executor_runner("E 00:00:00.1 executorch:executor_runner.cpp:480] Loading of method forward failed "
                              "with status 0x20\n", warmup=0)
    with pytest.raises(RunnerOutputError, match="no timing"):
        parse_executor_runner("Segmentation fault\n", warmup=0)
    with pytest.raises(RunnerOutputError, match="warm-up"):
        parse_executor_runner(ET_OUTPUT, warmup=4)


def test_onnxruntime_perf_test_summary():
    m = parse_onnxruntime_perf_test(ORT_OUTPUT)
    lat = m.latency()
    assert lat["median"] == pytest.approx(0.9458)
    assert lat["p90"] == pytest.approx(1.0243) and lat["min"] == pytest.approx(0.7726)
    assert lat["max"] == pytest.approx(1.8647) and lat["stdev"] is None
    assert m.load_ms == pytest.approx(18.3481) and m.first_inference_ms == 2.0
    assert m.iterations == 10000
    assert m.peak_memory_mb == pytest.approx(50905088 / 2**20)


def test_onnxruntime_perf_test_garbage():
    with pytest.raises(RunnerOutputError):
        parse_onnxruntime_perf_test("input path is not a valid model\n")
