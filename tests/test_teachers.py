"""open_clip CLIP ViT teachers: native key layout, strict loading, and the forward pass of open_clip's CLIP."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from goldens import golden_tensor, load_manifest
from reinforced_fixtures import tiny_teacher

import mobileclip_deploy as mcd
from mobileclip_deploy.checkpoint import load_checkpoint_into
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.models.clip import CLIP
from mobileclip_deploy.registry import OPENAI_MEAN, OPENAI_STD, get_variant


def _meta_state(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in CLIP(get_variant(name)).state_dict().items()}


def test_full_size_key_layouts(shared_dir: Path) -> None:
    """ViT-L/14 = MobileCLIP2-L-14's tensors under open_clip's CLIP names (no head bias); open_clip's counts."""
    entries = load_manifest(shared_dir, "openclip_MobileCLIP2-L-14")["train_time"]["state_dict"]
    rename = [(r"^visual\.trunk\.patch_embed\.proj\.", "visual.conv1."),
              (r"^visual\.trunk\.cls_token", "visual.class_embedding"),
              (r"^visual\.trunk\.pos_embed", "visual.positional_embedding"),
              (r"^visual\.trunk\.norm_pre", "visual.ln_pre"),
              (r"^visual\.trunk\.blocks\.", "visual.transformer.resblocks."), (r"norm1", "ln_1"), (r"norm2", "ln_2"),
              (r"attn\.qkv\.", "attn.in_proj_"), (r"attn\.proj", "attn.out_proj"), (r"mlp\.fc1", "mlp.c_fc"),
              (r"mlp\.fc2", "mlp.c_proj"), (r"^visual\.trunk\.norm\.", "visual.ln_post."),
              (r"^visual\.trunk\.head\.weight", "visual.proj"), (r"^text\.", "")]
    expected = {}
    for key, shape, _ in entries:
        if key == "visual.trunk.head.bias":
            continue
        for pattern, new in rename:
            key = re.sub(pattern, new, key)
        shape = {"visual.class_embedding": [1024], "visual.positional_embedding": [257, 1024],
                 "visual.proj": [1024, 768]}.get(key, shape)
        expected[key] = tuple(shape)
    for name in ("openclip-vit-l-14", "openclip-vit-l-14-quickgelu"):
        assert _meta_state(name) == expected
    b16 = _meta_state("openclip-vit-b-16")
    assert sum(torch.Size(s).numel() for s in b16.values()) == 149_620_737  # open_clip ViT-B-16
    assert sum(torch.Size(s).numel() for s in expected.values()) == 427_616_513  # open_clip ViT-L-14
    assert b16["visual.conv1.weight"] == (768, 3, 16, 16) and b16["visual.proj"] == (768, 512)
    assert b16["text_projection"] == (512, 512) and len([k for k in b16 if k.endswith("ln_1.weight")]) == 24
    assert get_variant("ViT-L-14-quickgelu").image.quick_gelu and not get_variant("ViT-L-14").image.quick_gelu


def _block(sd: dict, p: str, x: torch.Tensor, heads: int, quick: bool, mask: torch.Tensor | None) -> torch.Tensor:
    w = x.shape[-1]
    h = F.layer_norm(x, (w,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"]).transpose(0, 1)
    a, _ = F.multi_head_attention_forward(h, h, h, w, heads, sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"],
                                          None, None, False, 0.0, sd[p + "attn.out_proj.weight"],
                                          sd[p + "attn.out_proj.bias"], need_weights=False, attn_mask=mask)
    x = x + a.transpose(0, 1)
    h = F.linear(F.layer_norm(x, (w,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"]), sd[p + "mlp.c_fc.weight"],
                 sd[p + "mlp.c_fc.bias"])
    h = h * torch.sigmoid(1.702 * h) if quick else F.gelu(h)
    return x + F.linear(h, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])


def reference_clip(sd: dict, pixels: torch.Tensor, tokens: torch.Tensor, heads: int, patch: int, quick: bool):
    """open_clip's CLIP forward written from its state dict alone (nn.MultiheadAttention's functional form)."""
    x = (pixels - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    x = F.conv2d(x, sd["visual.conv1.weight"], stride=patch).flatten(2).transpose(1, 2)
    w = x.shape[-1]
    x = torch.cat([sd["visual.class_embedding"].expand(x.shape[0], 1, w), x], 1) + sd["visual.positional_embedding"]
    x = F.layer_norm(x, (w,), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"])
    for i in range(2):
        x = _block(sd, f"visual.transformer.resblocks.{i}.", x, heads, quick, None)
    image = F.layer_norm(x, (w,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"])[:, 0] @ sd["visual.proj"]
    t = sd["token_embedding.weight"][tokens] + sd["positional_embedding"][: tokens.shape[1]]
    n = tokens.shape[1]
    mask = torch.full((n, n), float("-inf")).triu(1)
    for i in range(2):
        t = _block(sd, f"transformer.resblocks.{i}.", t, heads, quick, mask)
    t = F.layer_norm(t, (t.shape[-1],), sd["ln_final.weight"], sd["ln_final.bias"])
    return image, t[torch.arange(t.shape[0]), tokens.argmax(-1)] @ sd["text_projection"]


@pytest.mark.parametrize("quick", [False, True])
def test_native_checkpoint_loads_strictly_and_matches_open_clip_forward(tmp_path: Path, quick: bool) -> None:
    variant = tiny_teacher(quick)
    with torch.device("meta"):
        keys = {k: list(v.shape) for k, v in CLIP(variant).state_dict().items()}
    sd = {k: golden_tensor(k, s, "float32") for k, s in keys.items()}
    torch.save(sd, tmp_path / "teacher.pt")
    model = CLIP(variant).eval()
    info = load_checkpoint_into(model, tmp_path / "teacher.pt")
    assert info.layout == "openclip-native" and set(model.state_dict()) == set(sd)
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = mcd.tokenize(["a photo of a cat", "a diagram"], 77)
    with torch.no_grad():
        got = model.encode_image(pixels), model.encode_text(tokens)
    want = reference_clip(sd, pixels, tokens, 2, 8, quick)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-5), (g - w).abs().max()
    other = reference_clip(sd, pixels, tokens, 2, 8, not quick)[0]
    assert not torch.allclose(got[0], other, rtol=1e-4, atol=1e-5)  # the activation flavour is not cosmetic


def test_checkpoints_that_do_not_fit(tmp_path: Path) -> None:
    with torch.device("meta"):
        keys = {k: list(v.shape) for k, v in CLIP(tiny_teacher(False)).state_dict().items()}
    sd = {k: golden_tensor(k, s, "float32") for k, s in keys.items()}
    torch.save(sd, tmp_path / "tiny.pt")
    with pytest.raises(UserError, match=r"wrong shape for tiny-clip: visual.class_embedding: file \(32,\)"):
        load_checkpoint_into(CLIP(tiny_teacher(False, width=48)), tmp_path / "tiny.pt")
    with pytest.raises(UserError, match="unknown model 'vit-h-14'"):
        mcd.create_model("vit-h-14")
