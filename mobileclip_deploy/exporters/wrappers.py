"""Tower modules with the named, app-facing I/O every artifact shares.

The image tower takes `pixels` (N×3×R×R float in [0, 1], normalization inside); the text tower takes
`tokens` (N×77 int32, because ONNX Runtime's ArgMax has no int64 kernel and Core ML drops int64 inputs).
Each wraps only the submodules its tower uses, so an image artifact never carries text weights.
"""

from __future__ import annotations

import copy

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


class Float16Compute(nn.Module):
    """Run a tower in float16 but keep float32 inputs/outputs, so apps feed the same tensors for every scheme."""

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.tower = copy.deepcopy(tower).half()

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
