"""Fold the affine layers the reparameterized model still has (conv→BatchNorm, conv→layer scale) into their convs.

The folded model is the same function, but every weight an exporter sees is a named parameter of the PyTorch
tower: Core ML's converter would otherwise fuse these pairs itself into anonymous constants (`const_227`), and
the Linux-side weight check could not put the compressed values back into PyTorch (a third of S0's image
weights went unchecked). Every backend exports this form, so all artifacts come from one graph.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mobileclip_deploy.models.mci import AttentionBlock, RepMixerBlock, fold_bn


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


def _fold_scale(conv: nn.Conv2d, gamma: torch.Tensor) -> None:
    """conv(x) * gamma (per output channel) -> conv with scaled weight and bias."""
    scale = gamma.reshape(-1)
    conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.dim() - 1))))
    if conv.bias is not None:
        conv.bias.mul_(scale)


@torch.no_grad()
def fold_affine(tower: nn.Module) -> nn.Module:
    """An eval-mode copy of `tower` with conv→BN and conv→layer-scale pairs folded (same outputs to ~1e-7)."""
    tower = copy.deepcopy(tower).eval()
    modules = list(tower.modules())
    for module in modules:
        if isinstance(getattr(module, "conv", None), nn.Conv2d) and isinstance(getattr(module, "bn", None),
                                                                              nn.BatchNorm2d):
            _fold_conv_bn(module)
    for module in modules:
        if isinstance(module, RepMixerBlock):
            _fold_scale(module.mlp.fc2, module.layer_scale.gamma)
            module.layer_scale = nn.Identity()
        elif isinstance(module, AttentionBlock):
            _fold_scale(module.mlp.fc2, module.layer_scale_2.gamma)
            module.layer_scale_2 = nn.Identity()
    return tower
