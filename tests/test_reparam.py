"""Folding (`reparameterize`) changes the computation graph but never the embeddings, for every variant.

Weights are random, but a fresh model's BatchNorms are identities (mean 0, var 1, weight 1, bias 0) and its layer
scales are 1e-5, which would hide a wrong fold of the BN or RepMixer math. `randomize_folded_statistics_` makes
them non-trivial (fixed seed) so each fold is really exercised.

Relative error, per encoder: max|folded - train_time| / max|train_time| over the whole output batch.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from mobileclip_deploy import create_model, preprocess, reparameterize, tokenize
from mobileclip_deploy.models.mci import LayerScale2d
from mobileclip_deploy.preprocess import load_image
from mobileclip_deploy.registry import VARIANTS, Variant, get_variant
from mobileclip_deploy.reparam import foldable_modules, is_folded, remaining_branches

pytestmark = pytest.mark.usefixtures("one_thread")

RTOL = 1e-5
# Big encoders run one image so that each variant stays within ~20 s on a shared 2-core machine.
BIG = {"mobileclip-b", "mobileclip-b-lt", "mobileclip2-b", "mobileclip2-s3", "mobileclip2-s4", "mobileclip2-l-14"}
PHOTOS = ["n01491361_tiger_shark.JPEG", "n02085936_Maltese_dog.JPEG"]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).abs().max() / ref.abs().max()).item()


@torch.no_grad()
def randomize_folded_statistics_(model: nn.Module, seed: int = 0) -> int:
    """Give every BatchNorm random statistics and affine terms, and every LayerScale a 0.01-0.1 scale.

    Returns how many modules it changed, so a model with nothing to randomize cannot pass silently.
    """
    g = torch.Generator().manual_seed(seed)
    changed = 0
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            module.weight.copy_(torch.rand(n, generator=g) + 0.5)
            module.bias.copy_(torch.randn(n, generator=g) * 0.1)
        elif isinstance(module, LayerScale2d):
            module.gamma.copy_(torch.rand(module.gamma.shape, generator=g) * 0.09 + 0.01)
        else:
            continue
        changed += 1
    return changed


@pytest.fixture(scope="module")
def prompts(shared_dir: Path) -> torch.Tensor:
    with open(shared_dir / "data" / "imagenet-samples" / "labels.csv", newline="", encoding="utf-8") as f:
        names = [row["openai_classname"] for row in csv.DictReader(f)][:3]
    return tokenize([f"a photo of a {n}." for n in names] + ["an origami sculpture of a castle at night"])


@dataclass
class Folding:
    variant: Variant
    train: nn.Module
    folded: nn.Module
    input_changes: list[str]  # state-dict keys of the train-time model that reparameterize() altered or removed
    pixels: torch.Tensor
    tokens: torch.Tensor
    train_out: dict[str, torch.Tensor]
    folded_out: dict[str, torch.Tensor]


def encode(model: nn.Module, pixels: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        return {"image": model.encode_image(pixels), "text": model.encode_text(tokens)}


@pytest.fixture(scope="module", params=[v.name for v in VARIANTS])
def folding(request: pytest.FixtureRequest, shared_dir: Path, prompts: torch.Tensor) -> Folding:
    """One randomized train-time model per variant, its folded copy, and both models' embeddings."""
    name = request.param
    variant = get_variant(name)
    torch.manual_seed(0)
    model = create_model(name)
    assert randomize_folded_statistics_(model) > 0 or variant.family == "vit"
    photos = PHOTOS[:1] if name in BIG else PHOTOS
    folder = shared_dir / "data" / "imagenet-samples"
    pixels = torch.stack([preprocess(load_image(folder / p), name) for p in photos])

    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = reparameterize(model)
    after = model.state_dict()
    changes = sorted(set(before) ^ set(after)) + [k for k in before if k in after and not torch.equal(before[k],
                                                                                                       after[k])]
    del before, after
    return Folding(variant, model, folded, changes, pixels, prompts, encode(model, pixels, prompts),
                   encode(folded, pixels, prompts))


@pytest.mark.parametrize("tower", ["image", "text"])
def test_folding_preserves_embeddings(folding: Folding, tower: str) -> None:
    out, ref = folding.folded_out[tower], folding.train_out[tower]
    assert ref.shape == (len(folding.pixels) if tower == "image" else len(folding.tokens), folding.variant.embed_dim)
    assert torch.isfinite(ref).all()
    assert rel_err(out, ref) < RTOL


def test_no_train_time_branch_remains(folding: Folding) -> None:
    assert remaining_branches(folding.folded) == []
    assert is_folded(folding.folded)
    # MCi encoders (and S0's MCt text encoder) have branches to fold; the ViT-based variants have none.
    assert bool(remaining_branches(folding.train)) == (folding.variant.family == "mci")


def test_input_model_not_mutated(folding: Folding) -> None:
    """By default `reparameterize` folds a copy: the caller's train-time weights and branches stay as they were."""
    assert folding.input_changes == []
    assert is_folded(folding.train) == (folding.variant.family == "vit")


def test_double_folding_is_noop(folding: Folding) -> None:
    again = reparameterize(folding.folded)
    first, second = folding.folded.state_dict(), again.state_dict()
    assert list(second) == list(first)
    assert [k for k in first if not torch.equal(first[k], second[k])] == []
    out = encode(again, folding.pixels, folding.tokens)
    assert all(torch.equal(out[t], folding.folded_out[t]) for t in ("image", "text"))


def test_inplace_folds_the_given_model() -> None:
    model = create_model("mobileclip-s0")
    assert foldable_modules(model) and not is_folded(model)
    assert reparameterize(model, inplace=True) is model
    assert is_folded(model)
