"""Rewrite depthwise convs into the shapes XNNPACK's fast depthwise kernels cover (ExecuTorch XNNPACK export only).

Two shapes in MCi towers fall off XNNPACK's fast path (measured at 1 thread on this host, S0's image tower, with
`executorch.devtools.Inspector` over an ETDump):
- 7×7 depthwise (49 taps) runs XNNPACK's multipass kernel, ~5x slower than ONNX Runtime. Its single-pass
  kernels cover 3, 4, 9 and 25 taps, and the 9-tap one ran about twice the per-tap rate of the 25-tap one, so a
  7×7 conv becomes seven convs of ≤9 taps, summed. Each takes a set of kernel rows × columns that are evenly
  spaced and centred (e.g. rows {-2, 2} × columns {-3, -1, 1, 3}), which a dilated conv with symmetric padding
  computes at the same output size: no pads or slices.
- A depthwise conv with a channel multiplier (PatchEmbed's 7×7 stride-2 C→2C, the head's 3×3 C→2C) is not a
  depthwise conv to XNNPACK: it runs as a grouped GEMM with one input channel per group, 2-4x slower than one
  depthwise conv per multiplier slot with the outputs interleaved.
The rewritten tower is the same function to float rounding (tests/test_xnnpack_depthwise.py).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mobileclip_deploy.exporters.sensitive import is_depthwise

MULTIPASS_TAPS = 25  # above this XNNPACK falls back to its multipass depthwise kernel
PIECE_TAPS = 9  # the largest single-pass kernel that keeps its full per-tap rate
MAX_HALF_WIDTH = 3  # tiling below keeps pieces within PIECE_TAPS for kernels up to 7 wide

Offsets = tuple[int, ...]


def _centred(offsets: Offsets) -> bool:
    """Evenly spaced and symmetric about 0: what one dilated conv with symmetric padding reaches."""
    steps = {b - a for a, b in zip(offsets, offsets[1:])}
    return len(steps) <= 1 and offsets[0] == -offsets[-1]


def tile_kernel(half_h: int, half_w: int) -> list[tuple[Offsets, Offsets]]:
    """Cover the kernel offsets [-half_h, half_h] × [-half_w, half_w] with centred pieces of ≤ PIECE_TAPS taps.

    Columns split into even and odd offsets (each centred, step 2); within each, rows grow from the centre
    outwards in ±r pairs while the piece stays centred and small. 7×7 gives 9+6+6+4+8+8+8 taps.
    """
    pieces = []
    for parity in (0, 1):
        cols = tuple(o for o in range(-half_w, half_w + 1) if o % 2 == parity)
        if not cols:
            continue
        rows: Offsets = ()
        for group in [(0,)] + [(-r, r) for r in range(1, half_h + 1)]:
            merged = tuple(sorted(rows + group))
            if rows and (not _centred(merged) or len(merged) * len(cols) > PIECE_TAPS):
                pieces.append((rows, cols))
                merged = group
            rows = merged
        pieces.append((rows, cols))
    return pieces


def _conv_args(offsets: Offsets) -> tuple[int, int]:
    """(dilation, padding) of the dilated conv whose taps sit at these centred offsets."""
    return (offsets[1] - offsets[0] if len(offsets) > 1 else 1), -offsets[0]


class SplitDepthwiseConv(nn.Module):
    """A depthwise conv (any channel multiplier) as per-slot sums of small dilated depthwise convs."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        kh, kw = conv.kernel_size
        self.channels, self.stride = conv.in_channels, conv.stride
        self.multiplier = conv.out_channels // conv.in_channels
        weight = conv.weight.detach()
        if _splittable(conv):
            pieces = tile_kernel(kh // 2, kw // 2)
            self.args = [tuple(zip(_conv_args(rows), _conv_args(cols))) for rows, cols in pieces]
            kernels = [weight[:, :, [r + kh // 2 for r in rows]][:, :, :, [c + kw // 2 for c in cols]]
                       for rows, cols in pieces]
        else:
            self.args, kernels = [(conv.dilation, conv.padding)], [weight]
        # Output channel i·m + j of the original conv reads input channel i: slot j holds every m-th channel.
        m = self.multiplier
        self.weights = nn.ParameterList([nn.Parameter(k[j::m].clone()) for j in range(m) for k in kernels])
        self.biases = nn.ParameterList(
            [nn.Parameter(conv.bias.detach()[j::m].clone()) for j in range(m)] if conv.bias is not None else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slots = []
        for j in range(self.multiplier):
            out = None
            for p, (dilation, padding) in enumerate(self.args):
                bias = self.biases[j] if out is None and len(self.biases) else None
                y = F.conv2d(x, self.weights[j * len(self.args) + p], bias, self.stride, padding, dilation,
                             self.channels)
                out = y if out is None else out + y
            slots.append(out)
        if self.multiplier == 1:
            return slots[0]
        y = torch.stack(slots, dim=2)
        return y.reshape(y.shape[0], -1, *y.shape[3:])


def _splittable(conv: nn.Conv2d) -> bool:
    """Wide enough to hit the multipass kernel and shaped so centred pieces reproduce it exactly."""
    kh, kw = conv.kernel_size
    return (kh * kw > MULTIPASS_TAPS and kh % 2 == kw % 2 == 1 and max(kh, kw) // 2 <= MAX_HALF_WIDTH
            and conv.padding == (kh // 2, kw // 2) and conv.dilation == (1, 1))


def _worth_rewriting(module: nn.Module) -> bool:
    return (is_depthwise(module) and module.padding_mode == "zeros" and isinstance(module.padding, tuple)
            and (module.out_channels > module.in_channels or _splittable(module)))


@torch.no_grad()
def split_depthwise(tower: nn.Module) -> nn.Module:
    """A copy of `tower` with every wide or channel-multiplying depthwise conv replaced by a SplitDepthwiseConv."""
    tower = copy.deepcopy(tower)
    for parent in list(tower.modules()):
        for name, child in parent.named_children():
            if _worth_rewriting(child):
                setattr(parent, name, SplitDepthwiseConv(child))
    return tower
