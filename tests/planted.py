"""Planted defects that the parity gate (mobileclip_deploy/verify/gate.py) must catch, for every backend's tests.

PyTorch level (any backend: plant before export, then export as usual): each function takes a tower `nn.Module`
and returns a defective deep copy, leaving the original untouched.
- `swap_one_activation`: one GELU computes ReLU (what a wrong lowering does).
- `perturb_one_layer`: one layer's weights get noise of `scale` times their own standard deviation (a corrupted
  or mis-loaded tensor).
- `coarsen_one_layer`: one layer's weights are fake-quantized to `bits` bits (a layer a quantizer got wrong).
ONNX level (edit an exported graph): `onnx_swap_gelu`, `onnx_perturb_initializer`, `onnx_coarsen_initializer`, the
same three defects on a saved `.onnx`.

"One layer" is the middle one of the candidates in module order, so the defect sits inside the network rather than
at an end where a later norm could hide it or the output projection would make it trivially visible.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _middle(items: list):
    if not items:
        raise ValueError("nothing to plant a defect in")
    return items[len(items) // 2]


def _weighted_layers(tower: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear and convolution layers with a dense (not depthwise) weight, in module order."""
    return [(n, m) for n, m in tower.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv1d))
            and m.weight.shape[1] > 1 and m.weight[0].numel() > 1]


def swap_one_activation(tower: nn.Module) -> nn.Module:
    """A copy of `tower` whose middle `nn.GELU` is an `nn.ReLU`."""
    bad = copy.deepcopy(tower)
    name = _middle([n for n, m in bad.named_modules() if isinstance(m, nn.GELU)])
    parent, _, attr = name.rpartition(".")
    setattr(bad.get_submodule(parent) if parent else bad, attr, nn.ReLU())
    return bad


def perturb_one_layer(tower: nn.Module, scale: float = 0.05, seed: int = 0) -> nn.Module:
    """A copy of `tower` whose middle dense layer's weight has Gaussian noise of `scale` x its std added."""
    bad = copy.deepcopy(tower)
    _, layer = _middle(_weighted_layers(bad))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight += torch.randn(layer.weight.shape, generator=g) * layer.weight.std() * scale
    return bad


def fake_quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel quantization to `bits` bits, returned as floats."""
    levels = 2 ** (bits - 1) - 1 if bits > 1 else 1
    flat = weight.reshape(len(weight), -1)
    step = flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / max(levels, 1)
    return (torch.round(flat / step).clamp(-levels - 1, levels) * step).reshape(weight.shape)


def coarsen_one_layer(tower: nn.Module, bits: int = 2) -> nn.Module:
    """A copy of `tower` whose middle dense layer's weight is fake-quantized to `bits` bits per output channel."""
    bad = copy.deepcopy(tower)
    _, layer = _middle(_weighted_layers(bad))
    with torch.no_grad():
        layer.weight.copy_(fake_quantize(layer.weight, bits))
    return bad


# ONNX graphs --------------------------------------------------------------------------------------------------------

def _edit_onnx(src: Path, dst: Path, edit) -> Path:
    import onnx

    model = onnx.load(str(src))
    edit(model.graph)
    onnx.save(model, str(dst))
    return dst


def onnx_swap_gelu(src: Path, dst: Path) -> Path:
    """Save `src` with its middle GELU computing ReLU: a `Gelu` node becomes `Relu`; an erf-decomposed GELU
    (`0.5 * x * (1 + erf(x / sqrt 2))`) has its final Mul replaced by `Relu(x)`."""
    from onnx import helper

    def edit(graph) -> None:
        gelus = [n for n in graph.node if n.op_type == "Gelu"]
        if gelus:
            node = _middle(gelus)
            relu = helper.make_node("Relu", [node.input[0]], list(node.output), name=node.name + "_planted_relu")
        else:  # Erf -> Add -> Mul(x, .) -> Mul(., 0.5) (or Mul order swapped): find x and the last Mul
            erf = _middle([n for n in graph.node if n.op_type == "Erf"])
            div = next(n for n in graph.node if erf.input[0] in n.output)
            x = div.input[0]
            consumers = {i: n for n in graph.node for i in n.input}
            node = consumers[consumers[erf.output[0]].output[0]]  # the Mul after the Add
            nxt = consumers.get(node.output[0])
            if nxt is not None and nxt.op_type == "Mul":
                node = nxt
            relu = helper.make_node("Relu", [x], list(node.output), name=node.name + "_planted_relu")
        index = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(index, relu)

    return _edit_onnx(src, dst, edit)


def _float_weights(graph) -> list:
    from onnx import TensorProto

    return [t for t in graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) >= 2
            and int(np.prod(t.dims[1:])) > 1 and t.dims[1] > 1]


def _replace(graph, tensor, values: np.ndarray) -> None:
    from onnx import numpy_helper

    tensor.CopyFrom(numpy_helper.from_array(values.astype(np.float32), tensor.name))


def onnx_perturb_initializer(src: Path, dst: Path, scale: float = 0.05, seed: int = 0) -> Path:
    """Save `src` with Gaussian noise of `scale` x std added to its middle dense float weight initializer."""
    from onnx import numpy_helper

    def edit(graph) -> None:
        tensor = _middle(_float_weights(graph))
        w = numpy_helper.to_array(tensor)
        _replace(graph, tensor, w + np.random.default_rng(seed).standard_normal(w.shape) * w.std() * scale)

    return _edit_onnx(src, dst, edit)


def onnx_coarsen_initializer(src: Path, dst: Path, bits: int = 2) -> Path:
    """Save `src` with its middle dense float weight initializer fake-quantized to `bits` bits per row."""
    from onnx import numpy_helper

    def edit(graph) -> None:
        tensor = _middle(_float_weights(graph))
        w = numpy_helper.to_array(tensor)
        _replace(graph, tensor, fake_quantize(torch.from_numpy(w.copy()), bits).numpy())

    return _edit_onnx(src, dst, edit)
