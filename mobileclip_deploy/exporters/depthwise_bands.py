"""Split wide depthwise convs (7×7) into bands of rows that XNNPACK runs with its fast single-pass kernels.

XNNPACK's single-pass depthwise kernels cover up to 25 taps; a 7×7 (49-tap) depthwise conv falls to its
multipass path. Measured at 1 thread on this host, 4 such layers at 64×64×64: XNNPACK 23.9 ms, ONNX Runtime
1.1 ms. Rows 0-2, 3-5 and 6 as three convs (21, 21 and 7 taps) summed are the same function to ~1e-7 and ran
in 4.5 ms; S0's whole image tower ran 1.5x faster (103 vs 67 ms, one run). Only ExecuTorch XNNPACK uses this.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

SINGLE_PASS_TAPS = 25


class BandedDepthwiseConv(nn.Module):
    """A depthwise conv computed as a sum of convs over bands of its kernel rows (same padding and stride)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        kh, kw = conv.kernel_size
        rows = max(1, SINGLE_PASS_TAPS // kw)
        self.starts = list(range(0, kh, rows))
        self.weights = nn.ParameterList(
            [nn.Parameter(conv.weight[:, :, r : r + rows].detach().clone()) for r in self.starts])
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None
        self.kernel_h, self.stride, self.padding, self.groups = kh, conv.stride, conv.padding, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.padding
        x = F.pad(x, (pw, pw, ph, ph))
        out_h = (x.shape[2] - self.kernel_h) // self.stride[0] + 1
        out = None
        for start, weight in zip(self.starts, self.weights):
            # No-op slices are skipped: they lower to alias copies that XNNPACK does not take.
            bias = self.bias if start == 0 else None
            y = F.conv2d(x[:, :, start:] if start else x, weight, bias, self.stride, 0, 1, self.groups)
            y = y[:, :, :out_h] if y.shape[2] != out_h else y
            out = y if out is None else out + y
        return out


def _wide_depthwise(module: nn.Module) -> bool:
    return (isinstance(module, nn.Conv2d) and module.groups == module.in_channels == module.out_channels
            and module.kernel_size[0] * module.kernel_size[1] > SINGLE_PASS_TAPS and module.dilation == (1, 1)
            and module.padding_mode == "zeros" and isinstance(module.padding, tuple))


@torch.no_grad()
def split_wide_depthwise(tower: nn.Module) -> nn.Module:
    """A copy of `tower` with every depthwise conv over 25 taps replaced by a `BandedDepthwiseConv`."""
    tower = copy.deepcopy(tower)
    for parent in list(tower.modules()):
        for name, child in parent.named_children():
            if _wide_depthwise(child):
                setattr(parent, name, BandedDepthwiseConv(child))
    return tower
