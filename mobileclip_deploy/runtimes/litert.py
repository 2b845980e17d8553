"""LiteRT (formerly TensorFlow Lite, `.tflite`) on the host CPU through `ai_edge_litert`, with XNNPACK as Android's
default CPU path applies it: what XNNPACK took and what it left to LiteRT's reference kernels is reported, because
an op XNNPACK declines runs several times slower and is the first thing to look at when a `.tflite` is slow."""

from __future__ import annotations

from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any

from mobileclip_deploy.runtimes import Runner, Runtime, register, require

EXTRA = "litert-runtime"


def delegation(ops: list[dict[str, Any]]) -> dict[str, Any]:
    """XNNPACK partitions, delegated nodes and the ops left to reference kernels, from the interpreter's node list.

    After delegation the node list holds the model's ops followed by one DELEGATE node per partition. A partition
    is the set of ops that produce its outputs from its inputs, so walking producers back from each DELEGATE's
    outputs, stopping at that DELEGATE's inputs, names exactly the ops it replaced.
    """
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    model_ops = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op["index"] for op in model_ops for t in op["outputs"]}
    by_index = {op["index"]: op for op in model_ops}
    taken: set[int] = set()
    for delegate in delegates:
        boundary = {int(t) for t in delegate["inputs"]}
        todo = [int(t) for t in delegate["outputs"]]
        while todo:
            tensor = todo.pop()
            index = producer.get(tensor)
            if tensor in boundary or index is None or index in taken:
                continue
            taken.add(index)
            todo.extend(int(t) for t in by_index[index]["inputs"] if t >= 0)
    left = Counter(op["op_name"] for op in model_ops if op["index"] not in taken)
    return {"delegate": "XNNPACK" if delegates else None, "xnnpack_partitions": len(delegates),
            "delegated_nodes": len(taken), "model_nodes": len(model_ops), "reference_kernel_ops": dict(left)}


def interpreter(path: Path, threads: int = 1, preserve_all_tensors: bool = False):
    """LiteRT's Interpreter with its default op resolver, which applies XNNPACK as apps get it by default.
    `preserve_all_tensors` keeps every intermediate tensor readable (diagnose; XNNPACK then runs op by op)."""
    require("ai_edge_litert", EXTRA, "LiteRT")
    import warnings

    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # "intended for debugging purposes only": that is what it is used for
        warnings.simplefilter("ignore", UserWarning)
        return Interpreter(model_path=str(path), num_threads=threads,
                           experimental_preserve_all_tensors=preserve_all_tensors)


def load(path: Path, threads: int = 1) -> Runner:
    interp = interpreter(path, threads)
    interp.allocate_tensors()  # delegation happens here
    signatures = interp.get_signature_list()
    key = next(iter(signatures))
    runner = interp.get_signature_runner(key)
    (input_name,), (output_name,) = signatures[key]["inputs"], signatures[key]["outputs"]
    detail = runner.get_input_details()[input_name]
    info = {"runtime": "litert", "version": version("ai-edge-litert"), "signature": key,
            **delegation(interp._get_ops_details())}
    return Runner(lambda x: runner(**{input_name: x})[output_name], [int(d) for d in detail["shape"]],
                  detail["dtype"], info)


register(Runtime("litert", (".tflite",), load, extra=EXTRA))
