"""The layers that int8 activations and low-bit palettes keep in float, because quantizing them costs accuracy.

Measured on MobileCLIP-S0 (golden weights; 16 ImageNet photos to calibrate, 8 others to compare), image tower,
min cosine to fp32 with every conv and linear quantized -> with these layers kept in float:
ExecuTorch w8a8 0.984 -> 0.9992, ONNX static QDQ 0.963 -> 0.9985, ONNX dynamic int8 0.972 -> 0.9984.
Three kinds of layer carry the error:
- depthwise convs: a few taps per channel, so 8-bit inputs and weights leave little signal;
- layers fed by a global average (squeeze-excite, the pooled projection head): a per-image mean has a tiny spread
  next to its range, so 8-bit steps swamp it;
- convs whose output *is* the residual stream (folded RepMixer token mixers, the RepCPE positional conv, stage
  downsampling): quantizing them re-quantizes the whole stream at every block.
Together they hold about 5% of S0's image weights and little of its compute.

4-bit weights hurt most in the attention projections and the projection onto the embedding: S0's text tower
fell to cosine 0.969 with every Core ML linear at 4-bit palettes (each of those alone costs up to 0.006, an
MLP weight 0.002 at most) and rose to 0.993 with them at 8 bits. 4-bit schemes (`pal4`, `8da4w`) keep them
at 8 bits: mixed-bit compression, as Apple's Stable Diffusion palettization recipes do.
"""

from __future__ import annotations

from torch import nn

from mobileclip_deploy.models.mci import (
    Attention,
    PatchEmbed,
    PooledHead,
    RepConditionalPosEnc,
    RepMixer,
    SqueezeExcite,
)
from mobileclip_deploy.models.text import TextAttention
from mobileclip_deploy.models.vit import ViTAttention

_FLOAT_TYPES = (SqueezeExcite, PooledHead, RepMixer, RepConditionalPosEnc, PatchEmbed)
_ATTENTION_TYPES = (Attention, TextAttention, ViTAttention)


def is_depthwise(module: nn.Module) -> bool:
    """A conv with one input channel per group (any channel multiplier)."""
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def float_modules(tower: nn.Module) -> list[str]:
    """Qualified names of the submodules of `tower` to leave unquantized (everything below them too)."""
    return [name for name, module in tower.named_modules()
            if name and (isinstance(module, _FLOAT_TYPES) or is_depthwise(module))]


def inside(scope: str, names: list[str]) -> bool:
    """Whether the module path `scope` (dotted) is one of `names` or below one of them."""
    return any(scope == n or scope.startswith(n + ".") for n in names)


def eight_bit_params(tower: nn.Module) -> list[str]:
    """Weights 4-bit schemes keep at 8 bits: attention projections and the text projection to the embedding."""
    attention = [name for name, module in tower.named_modules() if isinstance(module, _ATTENTION_TYPES)]
    return [name for name, p in tower.named_parameters()
            if p.dim() == 2 and (inside(name.rpartition(".")[0], attention) or name.endswith("text_projection"))]
