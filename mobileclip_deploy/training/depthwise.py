"""Depthwise convolutions that train faster on CPU: large kernels' weight gradient, 1x1 kernels as a multiply.

torch's CPU backward of a depthwise conv (groups == input channels) with a kernel larger than 3x3 computes the
weight gradient about 3x slower from NCHW tensors than from channels_last copies of the same tensors, copies
included (oneDNN's NCHW depthwise kernels stop at 3x3). Measured on S0 at batch 32, 1 thread (AMD EPYC, avx2):
the weight gradients of the image tower's 24 large depthwise convs 6.4 s -> 2.1 s, its whole backward
15.5 s -> 10.7 s. Input gradients, 3x3 and 1x1 kernels are as fast as torch computes them, so they stay; an input
gradient of the strided ones as a stride-1 conv over the zero-upsampled gradient was 2.7x faster alone but slower
inside the step (11.8 vs 10.9 s of backward), so it was not kept.
A 1x1 depthwise conv (MobileOne's scale branch) is a per-channel multiply; as one it takes half the time of
torch's conv forward and backward (batch 32, 1 thread: 128ch@32x32 27 -> 14 ms, 256ch@16x16 17 -> 7 ms).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mobileclip_deploy.exporters.sensitive import is_depthwise

LARGEST_NCHW_KERNEL = 3  # kernels up to 3x3 keep torch's own weight gradient


class _DepthwiseConv2dFunction(torch.autograd.Function):
    """F.conv2d forward; backward through aten's convolution_backward, the weight part on channels_last copies."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                padding: tuple[int, int], dilation: tuple[int, int], groups: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv = (list(stride), list(padding), list(dilation), False, [0, 0], groups)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = torch.ops.aten.convolution_backward(grad, x, weight, None, *ctx.conv, [True, False, False])[0]
        if need_w:
            cl = torch.channels_last
            grad_w = torch.ops.aten.convolution_backward(
                grad.contiguous(memory_format=cl), x.contiguous(memory_format=cl), weight, None, *ctx.conv,
                [False, True, False])[1].contiguous()
        if need_b:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None


class DepthwiseConv2d(nn.Conv2d):
    """An nn.Conv2d (same parameters, same state_dict) that differentiates through `_DepthwiseConv2dFunction` on CPU."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if x.device.type != "cpu" or not torch.is_grad_enabled():
            return super()._conv_forward(x, weight, bias)
        return _DepthwiseConv2dFunction.apply(x, weight, bias, self.stride, self.padding, self.dilation,
                                              self.groups)


class ChannelScaleConv2d(nn.Conv2d):
    """A 1x1 depthwise nn.Conv2d (one output per input channel) computed as a per-channel multiply on CPU."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if x.device.type != "cpu" or not torch.is_grad_enabled():
            return super()._conv_forward(x, weight, bias)
        if self.stride != (1, 1):
            x = x[:, :, :: self.stride[0], :: self.stride[1]]
        y = x * weight.view(1, -1, 1, 1)
        return y if bias is None else y + bias.view(1, -1, 1, 1)


def is_channel_scale(conv: nn.Module) -> bool:
    """A plain 1x1 depthwise conv without channel multiplier or padding: a per-channel multiply."""
    return (type(conv) is nn.Conv2d and is_depthwise(conv) and conv.out_channels == conv.in_channels
            and conv.kernel_size == (1, 1) and conv.padding == (0, 0))


def is_large_depthwise(conv: nn.Module) -> bool:
    """A plain 2-D depthwise conv (channel multiplier allowed) with a kernel larger than 3x3 and numeric padding."""
    return (type(conv) is nn.Conv2d and is_depthwise(conv) and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and max(conv.kernel_size) > LARGEST_NCHW_KERNEL)


def use_fast_depthwise(model: nn.Module) -> int:
    """Turn `model`'s large depthwise nn.Conv2d into DepthwiseConv2d and its 1x1 depthwise ones into
    ChannelScaleConv2d, in place; returns how many.

    The modules keep their identity, parameters, hooks and state_dict keys (only their class changes), so
    optimizers, checkpoints, `reparameterize()` and exports see the model as before.
    """
    swapped = 0
    for m in model.modules():
        kind = DepthwiseConv2d if is_large_depthwise(m) else ChannelScaleConv2d if is_channel_scale(m) else None
        if kind is not None:
            m.__class__ = kind
            swapped += 1
    return swapped
