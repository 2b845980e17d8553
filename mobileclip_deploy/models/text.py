"""Text encoders: the CLIP transformer (S1/S2/B and every MobileCLIP2) and MCt, the S0 conv/attention hybrid.

Names follow open_clip (`token_embedding`, `positional_embedding`, `transformer.resblocks.i`, `ln_final`,
`text_projection`); MCt's two RepMixer blocks sit in the same `resblocks` list, as in the official code.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mobileclip_deploy.models.attention import multi_head_attention
from mobileclip_deploy.models.mci import RepMixerBlock

# A large finite negative instead of -inf: softmax gives exact zeros in fp32 and fp16 stays finite.
MASK_VALUE = -1e4


class TextAttention(nn.Module):
    """Multi-head self-attention with a fused in-projection (see models/attention.py for its exportable form)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        return self.out_proj(multi_head_attention(qkv, self.heads, mask))


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation, x * sigmoid(1.702 x): open_clip's `-quickgelu` models and the `openai` weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def gelu(quick: bool) -> nn.Module:
    return QuickGELU() if quick else nn.GELU()


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, quick_gelu: bool = False) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.attn = TextAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, hidden), gelu=gelu(quick_gelu),
                                             c_proj=nn.Linear(hidden, width)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class TextRepMixerBlock(RepMixerBlock):
    """MCt's convolutional block: the [B, L, D] sequence seen as a [B, D, 1, L] image, (1 x 11) kernels."""

    def __init__(self, width: int, mlp_ratio: float = 4.0, kernel: int = 11) -> None:
        super().__init__(width, mlp_ratio, kernel=(1, kernel), mlp_kernel=(1, kernel))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape  # reshape, not (un)squeeze: XNNPACK delegates views but not squeeze/unsqueeze copies
        y = super().forward(x.transpose(1, 2).reshape(b, c, 1, n))
        return y.reshape(b, c, n).transpose(1, 2)


@dataclass(frozen=True)
class TextConfig:
    width: int = 512
    heads: int = 8
    layers: int = 12
    causal: bool = False
    mct: bool = False  # S0: [RepMixer, 4 x attention, RepMixer]
    context_length: int = 77
    vocab_size: int = 49408
    quick_gelu: bool = False


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig, embed_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width).normal_(std=0.01))
        self.transformer = nn.Module()
        if cfg.mct:
            blocks = [TextRepMixerBlock(cfg.width)] + [ResidualAttentionBlock(cfg.width, cfg.heads)
                                                       for _ in range(cfg.layers)] + [TextRepMixerBlock(cfg.width)]
        else:
            blocks = [ResidualAttentionBlock(cfg.width, cfg.heads, quick_gelu=cfg.quick_gelu)
                      for _ in range(cfg.layers)]
        self.transformer.resblocks = nn.ModuleList(blocks)
        self.ln_final = nn.LayerNorm(cfg.width, eps=1e-5)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, embed_dim).normal_(std=cfg.width ** -0.5))
        mask = torch.full((cfg.context_length, cfg.context_length), MASK_VALUE).triu(1) if cfg.causal else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:n]
        mask = self.attn_mask
        if mask is not None and n < len(mask):  # a full-size [:n, :n] exports as aten.alias, which Core ML rejects
            mask = mask[:n, :n]
        for block in self.transformer.resblocks:
            x = block(x, mask)
        x = self.ln_final(x)
        # The end-of-text token has the largest id, so argmax finds it (padding is 0).
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return pooled @ self.text_projection
