"""Every registry variant builds with exactly the reference checkpoint's keys, shapes and dtypes.

Models are built on the meta device: the state-dict structure is the same as on CPU, at no memory or init cost.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from goldens import NATIVE_MANIFEST, load_manifest

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.layouts import canonical_state_dict
from mobileclip_deploy.models.clip import CLIP
from mobileclip_deploy.registry import VARIANTS, get_variant
from mobileclip_deploy.reparam import reparameterize

NAMES = [v.name for v in VARIANTS]
FORMS = ("train_time", "reparameterized")
Signature = dict[str, tuple[tuple[int, ...], str]]


def signature(state: dict[str, torch.Tensor]) -> Signature:
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()}


def manifest_signature(manifest: dict, form: str) -> Signature:
    return {k: (tuple(shape), dtype) for k, shape, dtype in manifest[form]["state_dict"]}


@functools.cache
def meta_model(name: str, form: str) -> CLIP:
    """Built once per session: meta models hold no data, and the tests only read them."""
    with torch.device("meta"):
        model = CLIP(get_variant(name))
    return reparameterize(model, inplace=True) if form == "reparameterized" else model


def assert_same_signature(got: Signature, want: Signature) -> None:
    """Compare key sets first so a failure names the offending keys instead of dumping two huge dicts."""
    assert sorted(set(got) - set(want)) == [], "keys the reference does not have"
    assert sorted(set(want) - set(got)) == [], "reference keys the model lacks"
    assert {k: got[k] for k in want if got[k] != want[k]} == {}, "keys with another shape or dtype"


def test_registry_is_complete() -> None:
    assert sorted(NAMES) == sorted(NATIVE_MANIFEST)
    assert len(NAMES) == 11


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_matches_native_manifest(name: str, form: str, shared_dir: Path) -> None:
    """`state_dict()` is what strict loading of the official/open_clip checkpoint requires, key for key."""
    manifest = load_manifest(shared_dir, NATIVE_MANIFEST[name])
    assert_same_signature(signature(meta_model(name, form).state_dict()), manifest_signature(manifest, form))


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_manifest(name: str, shared_dir: Path) -> None:
    manifest = load_manifest(shared_dir, NATIVE_MANIFEST[name])
    for form in FORMS:
        model = meta_model(name, form)
        assert sum(p.numel() for p in model.parameters()) == manifest[form]["params_total"], form


# Official variants also load open_clip checkpoints: their canonical (open_clip-named) state dict must equal the
# open_clip manifest, except for the all-zero image head bias open_clip adds. S0 exists in open_clip only as an
# image tower (timm fastvit_mci0 = MobileCLIP2-S0's visual), so only its `visual.` keys are compared.
OPENCLIP_TWINS = [
    ("mobileclip-s0", "openclip_MobileCLIP2-S0", "visual.", "visual.trunk.head.fc.bias"),
    ("mobileclip-s1", "openclip_MobileCLIP-S1", "", "visual.trunk.head.fc.bias"),
    ("mobileclip-s2", "openclip_MobileCLIP-S2", "", "visual.trunk.head.fc.bias"),
    ("mobileclip-b", "openclip_MobileCLIP-B", "", "visual.trunk.head.bias"),
    ("mobileclip-b-lt", "openclip_MobileCLIP-B", "", "visual.trunk.head.bias"),
]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("name", "stem", "prefix", "head_bias"), OPENCLIP_TWINS)
def test_official_variant_matches_openclip_manifest(name: str, stem: str, prefix: str, head_bias: str, form: str,
                                                   shared_dir: Path) -> None:
    want = manifest_signature(load_manifest(shared_dir, stem), form)
    assert head_bias in want
    want = {k: v for k, v in want.items() if k.startswith(prefix) and k != head_bias}
    got = {k: v for k, v in signature(canonical_state_dict(meta_model(name, form))).items() if k.startswith(prefix)}
    assert_same_signature(got, want)


@pytest.mark.parametrize(("alias", "name"), [
    ("mobileclip_s0", "mobileclip-s0"),
    ("MobileCLIP-S0", "mobileclip-s0"),
    ("MOBILECLIP_S2", "mobileclip-s2"),
    ("mobileclip_b", "mobileclip-b"),
    ("mobileclip_blt", "mobileclip-b-lt"),
    ("MobileCLIP-B (LT)", "mobileclip-b-lt"),
    ("MobileCLIP2-S0", "mobileclip2-s0"),
    ("mobileclip2_s0", "mobileclip2-s0"),
    ("MobileCLIP2-L-14", "mobileclip2-l-14"),
    ("MobileCLIP2-L/14", "mobileclip2-l-14"),
    ("mobileclip2-S4", "mobileclip2-s4"),
])
def test_aliases_resolve(alias: str, name: str) -> None:
    assert get_variant(alias).name == name


@pytest.mark.parametrize("name", NAMES)
def test_manifest_names_resolve(name: str, shared_dir: Path) -> None:
    """The names the reference files themselves use (official file stem, open_clip model name) find the variant."""
    manifest = load_manifest(shared_dir, NATIVE_MANIFEST[name])
    spelled = manifest.get("variant") or manifest["open_clip_name"]
    expected = "mobileclip-b" if name == "mobileclip-b-lt" else name  # both share mobileclip_b's manifest
    assert get_variant(spelled).name == expected
    assert get_variant(name.upper()).name == name


@pytest.mark.parametrize(("typo", "suggestion"), [
    ("mobileclip-s00", "mobileclip-s0"),
    ("mobilclip_s2", "mobileclip-s2"),
    ("mobileclip2-s5", "mobileclip2-s"),
])
def test_typo_suggests(typo: str, suggestion: str) -> None:
    with pytest.raises(UserError, match=rf"unknown model '{typo}'\. Did you mean {suggestion}"):
        get_variant(typo)


def test_unrelated_name_lists_known_models() -> None:
    with pytest.raises(UserError) as info:
        get_variant("resnet50")
    assert "Did you mean" not in str(info.value)
    assert all(name in str(info.value) for name in NAMES)
