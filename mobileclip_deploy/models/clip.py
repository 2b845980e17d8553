"""The image-text pair: `visual.trunk` (MCi or ViT), `text`, and `logit_scale`, with open_clip's names."""

from __future__ import annotations

import math

import torch
from torch import nn

from mobileclip_deploy.layouts import OPENCLIP_NATIVE, install_official_layout, rename_family
from mobileclip_deploy.models.mci import MCi, MCiConfig
from mobileclip_deploy.models.text import TextTransformer
from mobileclip_deploy.models.vit import VisionTransformer
from mobileclip_deploy.registry import Variant


class CLIP(nn.Module):
    """`encode_image` takes RGB in [0, 1] and normalizes inside, so no caller can get the variant's mean/std wrong."""

    def __init__(self, variant: Variant) -> None:
        super().__init__()
        self.variant = variant
        self.visual = nn.Module()
        if isinstance(variant.image, MCiConfig):
            self.visual.trunk = MCi(variant.image, variant.embed_dim)
        else:
            self.visual.trunk = VisionTransformer(variant.image, variant.embed_dim,
                                                  head_bias=variant.layout == "openclip")
        self.text = TextTransformer(variant.text, variant.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.normalizes = variant.mean != (0.0, 0.0, 0.0) or variant.std != (1.0, 1.0, 1.0)
        self.register_buffer("mean", torch.tensor(variant.mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(variant.std).reshape(1, 3, 1, 1), persistent=False)
        if variant.layout in ("official", OPENCLIP_NATIVE):
            install_official_layout(self, rename_family(variant))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.normalizes:
            pixels = (pixels - self.mean) / self.std
        return self.visual.trunk(pixels)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens)

    def forward(self, pixels: torch.Tensor,
                tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Both towers; without tokens the image tower alone (DIME-FM's released form trains only that one)."""
        return self.encode_image(pixels), self.encode_text(tokens) if tokens is not None else None
