"""Fold the affine layers the reparameterized model still has (conv→BatchNorm, conv→layer scale) into their convs.

The folded model is the same function, but every weight an exporter sees is a named parameter of the PyTorch
tower: Core ML's converter would otherwise fuse these pairs itself into anonymous constants (`const_227`), and
the Linux-side weight check could not put the compressed values back into PyTorch (a third of S0's image
weights went unchecked). A BatchNorm that cannot fold (its input also feeds a residual) becomes a plain
per-channel affine: PT2E's conv-BN fusion would otherwise fold it into that conv and corrupt the residual
(S0 w8a8 fell to cosine 0.78 before any quantization). Every backend exports this form.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mobileclip_deploy.models.mci import AttentionBlock, LayerScale2d, RepMixerBlock, fold_bn


def _fold_conv_bn(owner: nn.Module) -> None:
    """`owner.bn(owner.conv(x))` -> one biased conv; the BN becomes an identity."""
    conv, bn = owner.conv, owner.bn
    weight, bias = fold_bn(conv.weight, bn)
    if conv.bias is not None:
        bias = bias + conv.bias * bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       conv.dilation, conv.groups, bias=True, dtype=weight.dtype, device=weight.device)
    folded.weight.copy_(weight)
    folded.bias.copy_(bias)
    owner.conv, owner.bn = folded, nn.Identity()


class ChannelAffine(nn.Module):
    """Eval-mode BatchNorm2d as `x * weight + bias` (per channel), so no exporter mistakes it for a foldable BN."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        self.weight = nn.Parameter(scale.reshape(1, -1, 1, 1).clone())
        self.bias = nn.Parameter((bn.bias - bn.running_mean * scale).reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


def _fold_scale(conv: nn.Conv2d, gamma: torch.Tensor) -> None:
    """conv(x) * gamma (per output channel) -> conv with scaled weight and bias."""
    scale = gamma.reshape(-1)
    conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.dim() - 1))))
    if conv.bias is not None:
        conv.bias.mul_(scale)


@torch.no_grad()
def fold_affine(tower: nn.Module) -> nn.Module:
    """An eval-mode copy of `tower` with its BNs and layer scales folded (same outputs to ~1e-7; idempotent)."""
    tower = copy.deepcopy(tower).eval()
    modules = list(tower.modules())
    for module in modules:
        if isinstance(getattr(module, "conv", None), nn.Conv2d) and isinstance(getattr(module, "bn", None),
                                                                              nn.BatchNorm2d):
            _fold_conv_bn(module)
    for module in modules:
        if isinstance(module, RepMixerBlock) and isinstance(module.layer_scale, LayerScale2d):
            _fold_scale(module.mlp.fc2, module.layer_scale.gamma)
            module.layer_scale = nn.Identity()
        if isinstance(module, AttentionBlock) and isinstance(module.layer_scale_2, LayerScale2d):
            _fold_scale(module.mlp.fc2, module.layer_scale_2.gamma)
            module.layer_scale_2 = nn.Identity()
        if isinstance(module, AttentionBlock) and isinstance(module.norm, nn.BatchNorm2d):
            module.norm = ChannelAffine(module.norm)
    return tower
