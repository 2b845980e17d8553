"""ONNX Runtime: each node reading a `<module path>.weight` initializer (the saved, ORT-optimized file keeps the
torch exporter's weight names but not its module scopes) is tied to that module; its output and data input are
exposed as graph outputs of an unoptimized session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mobileclip_deploy.verify.diagnose import ACTIVATIONS, first_divergence, torch_trace


def compare(path: Path, module: nn.Module, x: np.ndarray, tol: float) -> dict[str, Any]:
    """The first weighted node that departs from its module."""
    import onnx as onnx_lib

    from mobileclip_deploy.runtimes.onnxruntime import session

    trace = torch_trace(module, x)
    model = onnx_lib.load(str(path))
    initializers = {i.name for i in model.graph.initializer}
    # A separate bias node (MatMul + Add, Mul + Add) ends the module: compare after it.
    bias_node = {name: node for node in model.graph.node for name in node.input if name.endswith(".bias")}
    weighted = []  # (module, node name, output, data input)
    for node in model.graph.node:
        owner = next((name.rpartition(".")[0] for name in node.input if name in initializers
                      and name.removesuffix("_quantized").endswith(".weight")), None)
        if owner is not None and owner in trace.outputs and node.output:
            last = bias_node.get(owner + ".bias", node)
            weighted.append((owner, last.name, last.output[0], node.input[0]))
    existing = {o.name for o in model.graph.output}
    wanted = sorted({n for _, _, out, data in weighted for n in (out, data)} - existing - initializers
                    - {i.name for i in model.graph.input})
    model.graph.output.extend(onnx_lib.ValueInfoProto(name=name) for name in wanted)
    exposed = Path(path).with_name(f".{Path(path).stem}.diagnose.onnx")
    onnx_lib.save(model, str(exposed))
    try:
        sess = session(exposed, level="ORT_DISABLE_ALL")
        feed = sess.get_inputs()[0].name
        names = [o.name for o in sess.get_outputs()]
        values = dict(zip(names, sess.run(names, {feed: x}))) | {feed: x}
    finally:
        exposed.unlink(missing_ok=True)
    fused = {n.name: ACTIVATIONS.get(a.s.decode().lower(), lambda v: v) for n in model.graph.node
             for a in n.attribute if a.name == "activation"}
    return first_divergence(trace, [(owner, name, values[out], values.get(data)) for owner, name, out, data
                                    in weighted], tol, fused)
