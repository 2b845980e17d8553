"""Fold every train-time multi-branch block into its single-branch inference form, and prove nothing is left."""

from __future__ import annotations

import copy

import torch
from torch import nn

# Modules that exist only in train-time form; none may remain after folding.
TRAIN_TIME_BRANCHES = ("conv_kxk", "conv_scale", "identity", "large_conv", "small_conv", "pos_enc", "mixer")


def foldable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "reparameterize") and m is not model]


def remaining_branches(model: nn.Module) -> list[str]:
    """Names of train-time branches still present (empty once the model is fully folded)."""
    return [name for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] in TRAIN_TIME_BRANCHES]


def is_folded(model: nn.Module) -> bool:
    return not remaining_branches(model)


@torch.no_grad()
def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return the folded model in eval mode (a copy unless `inplace`); folding an already folded model is a no-op.

    Parents fold before their children, so a RepMixer reads its MobileOne children's branches itself.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for _, module in foldable_modules(model):
        module.reparameterize()
    left = remaining_branches(model)
    if left:
        raise RuntimeError(f"reparameterization left {len(left)} train-time branches, e.g. {left[:3]}")
    return model
