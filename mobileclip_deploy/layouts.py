"""State-dict layouts: the official apple/ml-mobileclip names as a renaming of our (open_clip/timm) names.

Our modules carry open_clip/timm names. A model whose native layout is "official" gets two hooks, so that its
`state_dict()` lists exactly the official keys and shapes, and its `load_state_dict()` takes either layout.
The rules run in order over each key; one rule may also transpose or reshape the tensor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from torch import nn

TRANSPOSE, UNSQUEEZE, SQUEEZE = "transpose", "unsqueeze", "squeeze"
Rule = tuple[str, str] | tuple[str, str, str]

# MobileOne / RepMixer / ConvFFN naming, shared by the MCi image encoders and MCt text blocks.
_MOBILEONE: list[Rule] = [
    (r"\.conv_kxk\.", ".rbr_conv."),
    (r"\.conv_scale\.", ".rbr_scale."),
    (r"\.identity\.", ".rbr_skip."),
    (r"\.mlp\.(conv|fc1|fc2)\.", r".convffn.\1."),
    (r"\.(layer_scale(?:_[12])?)\.gamma$", r".\1"),
]

_MCI: list[Rule] = [
    (r"^visual\.trunk\.", "image_encoder.model."),
    (r"^image_encoder\.model\.stem\.", "image_encoder.model.patch_embed."),
    (r"\.stages\.0\.blocks\.", ".network.0."),
    (r"\.stages\.1\.downsample\.", ".network.1."),
    (r"\.stages\.1\.blocks\.", ".network.2."),
    (r"\.stages\.2\.downsample\.", ".network.3."),
    (r"\.stages\.2\.blocks\.", ".network.4."),
    (r"\.stages\.3\.downsample\.", ".network.5."),
    (r"\.stages\.3\.pos_emb\.pos_enc\.", ".network.6.pe."),
    (r"\.stages\.3\.pos_emb\.reparam_conv\.", ".network.6.reparam_conv."),
    (r"\.stages\.3\.blocks\.", ".network.7."),
    (r"(\.network\.\d+\.proj\.0\.)reparam_conv\.", r"\1lkb_reparam."),
    (r"\.large_conv\.", ".lkb_origin."),
    (r"\.final_conv\.se\.fc1\.", ".conv_exp.se.reduce."),
    (r"\.final_conv\.se\.fc2\.", ".conv_exp.se.expand."),
    (r"\.final_conv\.", ".conv_exp."),
    (r"\.head\.fc\.weight$", ".head.proj", TRANSPOSE),
    *_MOBILEONE,
]

_VIT: list[Rule] = [
    (r"^visual\.trunk\.", "image_encoder.model."),
    (r"\.patch_embed\.backbone\.(\d+)\.conv\.", r".patch_emb.\1.block.conv."),
    (r"\.patch_embed\.backbone\.(\d+)\.bn\.", r".patch_emb.\1.block.norm."),
    (r"\.blocks\.(\d+)\.norm1\.", r".transformer.\1.pre_norm_mha.0."),
    (r"\.blocks\.(\d+)\.attn\.qkv\.", r".transformer.\1.pre_norm_mha.1.qkv_proj."),
    (r"\.blocks\.(\d+)\.attn\.proj\.", r".transformer.\1.pre_norm_mha.1.out_proj."),
    (r"\.blocks\.(\d+)\.norm2\.", r".transformer.\1.pre_norm_ffn.0."),
    (r"\.blocks\.(\d+)\.mlp\.fc1\.", r".transformer.\1.pre_norm_ffn.1."),
    (r"\.blocks\.(\d+)\.mlp\.fc2\.", r".transformer.\1.pre_norm_ffn.4."),
    (r"^image_encoder\.model\.norm\.", "image_encoder.model.post_transformer_norm."),
    (r"^image_encoder\.model\.head\.weight$", "image_encoder.model.classifier.proj", TRANSPOSE),
    (r"^image_encoder\.model\.pos_embed$", "image_encoder.model.pos_embed.pos_embed.pos_embed", UNSQUEEZE),
]

_TEXT: list[Rule] = [
    (r"^text\.token_embedding\.", "text_encoder.embedding_layer."),
    (r"^text\.positional_embedding$", "text_encoder.positional_embedding.pos_embed.pos_embed", UNSQUEEZE),
    (r"^text\.transformer\.resblocks\.", "text_encoder.transformer."),
    (r"\.ln_1\.", ".pre_norm_mha.0."),
    (r"\.attn\.in_proj_weight$", ".pre_norm_mha.1.qkv_proj.weight"),
    (r"\.attn\.in_proj_bias$", ".pre_norm_mha.1.qkv_proj.bias"),
    (r"\.attn\.out_proj\.", ".pre_norm_mha.1.out_proj."),
    (r"\.ln_2\.", ".pre_norm_ffn.0."),
    (r"\.mlp\.c_fc\.", ".pre_norm_ffn.1."),
    (r"\.mlp\.c_proj\.", ".pre_norm_ffn.4."),
    (r"^text\.ln_final\.", "text_encoder.final_layer_norm."),
    (r"^text\.text_projection$", "text_encoder.projection_layer"),
    *_MOBILEONE,
]

# open_clip's own CLIP class (ViT-B-16, ViT-L-14 and their -quickgelu twins): `visual.conv1`, `visual.transformer`,
# `visual.proj` (width x embed), and the text tower at the top level.
_CLIP_NATIVE: list[Rule] = [
    (r"^visual\.trunk\.patch_embed\.proj\.", "visual.conv1."),
    (r"^visual\.trunk\.cls_token$", "visual.class_embedding", SQUEEZE),
    (r"^visual\.trunk\.pos_embed$", "visual.positional_embedding", SQUEEZE),
    (r"^visual\.trunk\.norm_pre\.", "visual.ln_pre."),
    (r"^visual\.trunk\.blocks\.(\d+)\.", r"visual.transformer.resblocks.\1."),
    (r"\.norm1\.", ".ln_1."),
    (r"\.norm2\.", ".ln_2."),
    (r"\.attn\.qkv\.(weight|bias)$", r".attn.in_proj_\1"),
    (r"\.attn\.proj\.", ".attn.out_proj."),
    (r"\.mlp\.fc1\.", ".mlp.c_fc."),
    (r"\.mlp\.fc2\.", ".mlp.c_proj."),
    (r"^visual\.trunk\.norm\.", "visual.ln_post."),
    (r"^visual\.trunk\.head\.weight$", "visual.proj", TRANSPOSE),
    (r"^text\.", ""),
]
OPENCLIP_NATIVE = "openclip-native"
OFFICIAL_PREFIXES = ("image_encoder.", "text_encoder.")
NATIVE_MARKERS = ("visual.conv1.weight", "token_embedding.weight")


def official_key(key: str, family: str) -> tuple[str, str | None]:
    """Official name of one of our keys, and the tensor transform the renaming needs (if any).

    `family` "clip" names open_clip's native CLIP layout instead (the renamed layout of "openclip-native" variants).
    """
    if family == "clip":
        rules = _CLIP_NATIVE
    elif key.startswith("text."):
        rules = _TEXT
    elif key.startswith("visual."):
        rules = _MCI if family == "mci" else _VIT
    else:
        rules = []
    transform = None
    for rule in rules:
        new = re.sub(rule[0], rule[1], key)
        if new != key and len(rule) == 3:
            transform = rule[2]
        key = new
    return key, transform


def to_official(t: torch.Tensor, transform: str | None) -> torch.Tensor:
    if transform == TRANSPOSE:
        return t.t()
    if transform == UNSQUEEZE:
        return t.reshape((1,) * (4 - t.dim()) + tuple(t.shape))
    if transform == SQUEEZE:
        while t.dim() > 1 and t.shape[0] == 1:
            t = t[0]
    return t


def from_official(t: torch.Tensor, transform: str | None, shape: torch.Size) -> torch.Tensor:
    if transform == TRANSPOSE:
        t = t.t()
    return t.reshape(shape) if transform in (UNSQUEEZE, SQUEEZE) and t.numel() == shape.numel() else t


def is_official(keys: Iterable[str]) -> bool:
    return any(k.startswith(OFFICIAL_PREFIXES) for k in keys)


def is_openclip_native(keys: Iterable[str]) -> bool:
    return any(k in NATIVE_MARKERS for k in keys)


def rename_family(variant: object) -> str:
    """The `official_key` family of a variant whose native layout renames our keys (official or open_clip CLIP)."""
    return "clip" if variant.layout == OPENCLIP_NATIVE else variant.family


def canonical_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict under our own names, whatever layout the model presents."""
    model._layout_raw = True
    try:
        return model.state_dict()
    finally:
        model._layout_raw = False


def install_official_layout(model: nn.Module, family: str) -> None:
    """Make `model.state_dict()` official-named (or open_clip-CLIP-named, family "clip") and let
    `load_state_dict` take those names."""
    model._layout_raw = False

    def save_hook(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
        if module._layout_raw:
            return
        items = list(state_dict.items())
        state_dict.clear()
        for key, value in items:
            if key.startswith(prefix):
                new, transform = official_key(key[len(prefix):], family)
                state_dict[prefix + new] = to_official(value, transform)
            else:
                state_dict[key] = value

    def load_hook(module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
        ours = [k[len(prefix):] for k in state_dict if k.startswith(prefix)]
        if not (is_openclip_native(ours) if family == "clip" else is_official(ours)):
            return
        own = canonical_state_dict(module)
        reverse = {official_key(k, family)[0]: k for k in own}
        for key in ours:
            if key in reverse:
                canonical = reverse[key]
                transform = official_key(canonical, family)[1]
                value = state_dict.pop(prefix + key)
                state_dict[prefix + canonical] = from_official(value, transform, own[canonical].shape)

    model.register_state_dict_post_hook(save_hook)
    model.register_load_state_dict_pre_hook(load_hook)
