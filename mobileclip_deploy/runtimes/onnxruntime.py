"""ONNX Runtime on the host CPU (`.onnx`, `.ort`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobileclip_deploy.runtimes import Runner, Runtime, register, require

DTYPES = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64}


def session(path: Path, threads: int = 1, optimized_output: Path | None = None, ort_format: bool = False,
            level: str = "ORT_ENABLE_ALL"):
    """An ONNX Runtime CPU session. ALL adds this CPU's layout transforms (NCHWc convolutions), which exporters leave
    out of saved files for portability: the runtime applies them at load, as an app's session would by default."""
    ort = require("onnxruntime", "export", "ONNX Runtime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if optimized_output is not None:
        options.optimized_model_filepath = str(optimized_output)
        if ort_format:
            options.add_session_config_entry("session.save_model_format", "ORT")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load(path: Path, threads: int = 1) -> Runner:
    ort = require("onnxruntime", "export", "ONNX Runtime")
    sess = session(path, threads)
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    return Runner(lambda x: sess.run([out.name], {inp.name: x})[0], shape, DTYPES[inp.type],
                  {"name": "onnxruntime", "version": ort.__version__, "provider": "CPUExecutionProvider",
                   "graph_optimization": "ORT_ENABLE_ALL"})


register(Runtime("onnxruntime", (".onnx", ".ort"), load, extra="export", title="ONNX Runtime"))
