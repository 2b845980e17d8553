"""The layers int8 activation quantization keeps in float, because their 8-bit inputs or outputs cost accuracy.

Measured on MobileCLIP-S0 (golden weights, ImageNet photos, held-out images): quantizing every conv and linear
statically gave cosine 0.974 to fp32, below the 8-bit bar of 0.99. Two kinds of layer carry almost all of it:
- layers fed by a global average (squeeze-excite, the pooled projection head): a per-image mean has a tiny
  spread next to its range, so 8-bit steps swamp it;
- convs whose output *is* the residual stream (folded RepMixer token mixers, the RepCPE positional conv and the
  stage downsampling): their int8 outputs re-quantize the whole stream at every block.
Keeping them in float gave cosine 0.997 (16 calibration images) at a small cost in size: they hold a few
percent of S0's weights. Quantized artifacts list these layers in the manifest.
"""

from __future__ import annotations

from torch import nn

from mobileclip_deploy.models.mci import PatchEmbed, PooledHead, RepConditionalPosEnc, RepMixer, SqueezeExcite

_FLOAT_TYPES = (SqueezeExcite, PooledHead, RepMixer, RepConditionalPosEnc, PatchEmbed)


def float_modules(tower: nn.Module) -> list[str]:
    """Qualified names of the submodules of `tower` to leave unquantized (their children are included)."""
    return [name for name, module in tower.named_modules() if isinstance(module, _FLOAT_TYPES)]


def inside(scope: str, names: list[str]) -> bool:
    """Whether the module path `scope` (dotted) is one of `names` or below one of them."""
    return any(scope == n or scope.startswith(n + ".") for n in names)
