"""Tower modules with the named, app-facing I/O every artifact shares.

The image tower takes `pixels` (N×3×R×R float in [0, 1], normalization inside); the text tower takes
`tokens` (N×77 int32, because ONNX Runtime's ArgMax has no int64 kernel and Core ML drops int64 inputs).
Each wraps only the submodules its tower uses, so an image artifact never carries text weights.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

import torch
from torch import nn

INPUT_NAME = {"image": "pixels", "text": "tokens"}
OUTPUT_NAME = {"image": "image_embedding", "text": "text_embedding"}


class ImageTower(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


class TextTower(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """`value` with its floating tensors (also inside tuples and lists) in `dtype`."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


class Float32Island(nn.Module):
    """A submodule of a half-precision tower kept in float32: its inputs are cast up and its outputs back down, so
    the converter writes its ops as fp32 ops (a runtime that accumulates fp16 in fp16 computes them in fp32)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.float()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.module(*_cast(args, torch.float32), **{k: _cast(v, torch.float32) for k, v in kwargs.items()})
        return _cast(out, torch.float16)


class Float16Compute(nn.Module):
    """Run a tower in float16 but keep float32 inputs/outputs, so apps feed the same tensors for every scheme.
    `keep_fp32`: module paths of the tower computed in float32 inside it (`Float32Island`s)."""

    def __init__(self, tower: nn.Module, keep_fp32: Collection[str] = ()) -> None:
        super().__init__()
        self.tower = copy.deepcopy(tower).half()
        for path in sorted(keep_fp32, key=lambda p: p.count("."), reverse=True):  # inner islands before outer ones
            parent, _, name = path.rpartition(".")
            owner = self.tower.get_submodule(parent)
            setattr(owner, name, Float32Island(owner.get_submodule(name)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tower(x.half() if x.is_floating_point() else x).float()


def example_input(tower: str, image_size: int, context_length: int, batch: int = 1) -> torch.Tensor:
    """A shape/dtype example for tracing (values do not matter; the EOT id keeps argmax pooling meaningful)."""
    if tower == "image":
        return torch.rand(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    tokens = torch.zeros(batch, context_length, dtype=torch.int32)
    tokens[:, 0], tokens[:, 1], tokens[:, 2] = 49406, 320, 49407
    return tokens


def tower_module(folded: nn.Module, tower: str, image_size: int, context_length: int) -> nn.Module:
    """Wrap the folded model for `tower`, dropping top-level submodules that tower never touches."""
    wrapper_cls = ImageTower if tower == "image" else TextTower
    probe = wrapper_cls(folded)
    used: set[int] = set()
    with torch.enable_grad():
        params = [p for p in folded.parameters() if p.is_floating_point()]
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
        out = probe(example_input(tower, image_size, context_length))
        grads = torch.autograd.grad(out.sum(), params, allow_unused=True)
        used = {id(p) for p, g in zip(params, grads) if g is not None}
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    pruned = copy.copy(folded)
    pruned._modules = {name: child for name, child in folded._modules.items()
                       if child is None or any(id(p) in used for p in child.parameters())}
    # The checkpoint-layout hooks hold a weak reference to `folded`; a copied tower would carry a dead one.
    for hooks in ("_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                  "_load_state_dict_post_hooks"):
        setattr(pruned, hooks, type(getattr(folded, hooks))())
    return wrapper_cls(pruned).eval()
