"""ViT image encoders: ViT-B/16 with a conv stem (MobileCLIP-B, B-LT, MobileCLIP2-B), CLIP ViT-B/16 and ViT-L/14.

Names follow timm (`patch_embed`, `cls_token`, `pos_embed`, `blocks.i.{norm1,attn,norm2,mlp}`, `norm`, `head`).
The official MobileCLIP-B and timm's `vit_base_mci_224` differ in two settings (first stem conv padding 1 vs 0,
LayerNorm eps 1e-5 vs 1e-6); both are config fields, so each checkpoint runs the network it was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mobileclip_deploy.models.attention import multi_head_attention
from mobileclip_deploy.models.text import gelu


class ConvNormAct(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class ConvStem(nn.Module):
    """Stride-16 stem: 4x4/s4 and 2x2/s2 conv-BN-GELU, then a 2x2/s2 conv with bias to the model width."""

    def __init__(self, width: int, first_padding: int) -> None:
        super().__init__()
        mid = width // 4
        self.backbone = nn.Sequential(ConvNormAct(3, mid, 4, 4, first_padding), ConvNormAct(mid, mid, 2, 2, 0),
                                      ConvOnly(mid, width, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).flatten(2).transpose(1, 2)


class ConvOnly(nn.Module):
    """Last stem conv: with bias, no norm or activation (kept in a `conv` child to match checkpoint keys)."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PatchConv(nn.Module):
    """Plain patchify conv (ViT-L/14)."""

    def __init__(self, width: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, patch, patch, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ViTAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(multi_head_attention(self.qkv(x), self.heads))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int, quick_gelu: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = gelu(quick_gelu)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, eps: float, quick_gelu: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = ViTAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = Mlp(width, 4 * width, quick_gelu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@dataclass(frozen=True)
class ViTConfig:
    width: int
    depth: int
    heads: int
    image_size: int
    patch: int  # total stride of the patch embedding
    conv_stem: bool  # MobileCLIP-B style stem (else a single patchify conv)
    stem_padding: int = 0  # first stem conv: 1 in the official MobileCLIP-B, 0 in timm
    eps: float = 1e-6
    pos_embed_has_cls: bool = False  # ViT-L/14 (CLIP): the table covers the class token too
    norm_pre: bool = False
    quick_gelu: bool = False  # OpenAI CLIP flavour


VIT_B16_OFFICIAL = ViTConfig(768, 12, 12, 224, 16, conv_stem=True, stem_padding=1, eps=1e-5)
VIT_B16_TIMM = ViTConfig(768, 12, 12, 224, 16, conv_stem=True, stem_padding=0, eps=1e-6)
VIT_L14 = ViTConfig(1024, 24, 16, 224, 14, conv_stem=False, eps=1e-5, pos_embed_has_cls=True, norm_pre=True)
# open_clip's own CLIP ViTs (the MobileCLIP / MobileCLIP2 teachers): plain patchify conv, ln_pre, class position.
VIT_B16_CLIP = ViTConfig(768, 12, 12, 224, 16, conv_stem=False, eps=1e-5, pos_embed_has_cls=True, norm_pre=True)


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ViTConfig, embed_dim: int, head_bias: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        grid = (cfg.image_size // cfg.patch) ** 2
        self.patch_embed = ConvStem(cfg.width, cfg.stem_padding) if cfg.conv_stem else PatchConv(cfg.width, cfg.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.randn(1, grid + int(cfg.pos_embed_has_cls), cfg.width) * 0.02)
        self.norm_pre = nn.LayerNorm(cfg.width, eps=cfg.eps) if cfg.norm_pre else nn.Identity()
        self.blocks = nn.Sequential(*(Block(cfg.width, cfg.heads, cfg.eps, cfg.quick_gelu) for _ in range(cfg.depth)))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.head = nn.Linear(cfg.width, embed_dim, bias=head_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        if self.cfg.pos_embed_has_cls:
            x = torch.cat([cls, x], dim=1) + self.pos_embed
        else:  # MobileCLIP-B: position only on patches, class token prepended afterwards
            x = torch.cat([cls, x + self.pos_embed], dim=1)
        x = self.norm(self.blocks(self.norm_pre(x)))
        return self.head(x[:, 0])
