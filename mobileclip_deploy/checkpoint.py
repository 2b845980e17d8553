"""Strict checkpoint loading: official `.pt`, open_clip `.bin`/`.pt`/`.safetensors`, or a Hugging Face folder.

Every way a file can be wrong ends in one `UserError` that says what is wrong and what the file looks like,
never in a traceback from deep inside torch. Pickles load with `weights_only=True` (no code runs).
"""

from __future__ import annotations

import functools
import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.layouts import (OPENCLIP_NATIVE, canonical_state_dict, is_official, is_openclip_native,
                                      official_key, rename_family, to_official)
from mobileclip_deploy.registry import TEACHERS, Variant, list_variants

# Preferred file names inside a Hugging Face style folder, best first.
HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin")
SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
FOLDED_MARKERS = ("reparam_conv", "lkb_reparam")
# open_clip's image-head biases (MCi `head.fc`, ViT `head`), which the official layout does not have.
HEAD_BIAS_KEYS = ("visual.trunk.head.fc.bias", "visual.trunk.head.bias")
RENAMED_LAYOUTS = ("official", OPENCLIP_NATIVE)  # layouts whose names are a renaming of ours
# Match scores this close to the best one mean the same architecture up to a layout detail (one key in 300).
SAME_ARCHITECTURE = 0.005


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    layout: str  # "official", "openclip" or "openclip-native"
    folded: bool
    variant: str | None  # best-matching registry name
    match: float  # fraction of (key, shape) pairs shared with that variant
    num_tensors: int
    num_params: int
    also_fits: tuple[str, ...] = ()  # other variants with exactly the same keys and shapes
    upcast_from: str | None = None  # "float16"/"bfloat16" when half-precision weights were widened to float32


def resolve_checkpoint_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist.")
    if path.is_file():
        return path
    for name in HF_FILES:
        if (path / name).is_file():
            return path / name
    found = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"folder {path} holds no checkpoint file ({', '.join(SUFFIXES)}).")
    raise UserError(f"folder {path} holds several checkpoint files ({', '.join(p.name for p in found)}); "
                    "pass the one you mean.")


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], Path]:
    """Read the tensors of a checkpoint file or folder, unwrapping the usual containers."""
    file = resolve_checkpoint_file(path)
    if file.stat().st_size == 0:
        raise UserError(f"{file} is empty, not a checkpoint.")
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: object = load_file(file)
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{file} is not a readable safetensors file (truncated or corrupt?): {exc}") from None
    else:
        obj = _torch_load(file)
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{file} does not hold a state dict of tensors (found {type(obj).__name__}).")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    return state, file


def _torch_load(file: Path) -> object:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler names a blocked import as "GLOBAL module.name"; any other refusal is
        # just bytes that are not a pickle (e.g. "Unsupported operand 94").
        if "GLOBAL" in str(exc):
            raise UserError(f"{file} contains Python objects besides tensors; refusing to unpickle it "
                            "(only plain state dicts load, so no code from the file runs).") from None
        raise UserError(f"{file} is not a PyTorch checkpoint (unreadable pickle).") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        text = str(exc)
        if zipfile.is_zipfile(file) or "zip" in text or isinstance(exc, EOFError):
            raise UserError(f"{file} is truncated or corrupt ({text.splitlines()[0] if text else 'EOF'}).") from None
        raise UserError(f"{file} is not a PyTorch checkpoint ({text.splitlines()[0] if text else exc!r}).") from None
    except Exception as exc:  # garbage bytes can break the unpickler in any way (KeyError, IndexError, ...)
        raise UserError(f"{file} is not a PyTorch checkpoint (unreadable pickle: {type(exc).__name__}).") from None


def detect_layout(keys: list[str], file: Path) -> str:
    if is_official(keys):
        return "official"
    if is_openclip_native(keys):
        return OPENCLIP_NATIVE
    if any(k.startswith(("visual.", "text.")) for k in keys):
        return "openclip"
    raise UserError(f"{file} is not a MobileCLIP checkpoint: its keys ({', '.join(keys[:3])}, ...) are neither "
                    "official (image_encoder.*, text_encoder.*) nor open_clip (visual.*, text.*).")


@functools.cache
def _signatures() -> dict[tuple[str, str, bool], frozenset[tuple[str, tuple[int, ...]]]]:
    """(variant, layout, folded) -> its (key, shape) set; models are built on the meta device (no memory)."""
    from mobileclip_deploy.models.clip import CLIP
    from mobileclip_deploy.reparam import reparameterize

    table = {}
    for variant in (*list_variants(), *TEACHERS):
        with torch.device("meta"):
            model = CLIP(variant)
        for folded in (False, True):
            if folded:
                model = reparameterize(model, inplace=True)
            ours = canonical_state_dict(model)
            # Teachers are matched only in their native layout, so they never shadow a zoo variant's open_clip keys.
            table[(variant.name, "openclip", folded)] = frozenset(
                (k, tuple(t.shape)) for k, t in ours.items()) if variant.layout != OPENCLIP_NATIVE else frozenset()
            for layout in RENAMED_LAYOUTS:
                table[(variant.name, layout, folded)] = frozenset(
                    (official_key(k, rename_family(variant))[0], tuple(t.shape)) for k, t in model.state_dict().items()
                ) if variant.layout == layout else frozenset()
    return table


def _scores(state: dict[str, torch.Tensor], layout: str, folded: bool) -> dict[str, float]:
    """Per registry variant, how far its keys and shapes overlap the checkpoint's (Jaccard index)."""
    have = {(k, tuple(v.shape)) for k, v in state.items()}
    return {name: len(have & sig) / len(have | sig) for (name, sig_layout, sig_folded), sig in _signatures().items()
            if sig_layout == layout and sig_folded == folded and sig}


def _best(scores: dict[str, float]) -> tuple[str | None, float]:
    """The highest-scoring variant (first in registry order on ties) and its score."""
    best = max(scores, key=scores.get, default=None)
    return best, scores[best] if best else 0.0


def guess_variant(state: dict[str, torch.Tensor], layout: str, folded: bool) -> tuple[str | None, float]:
    """The registry variant whose keys and shapes overlap the checkpoint's most."""
    return _best(_scores(state, layout, folded))


def inspect_checkpoint(path: str | os.PathLike[str]) -> CheckpointInfo:
    state, file = read_state_dict(path)
    layout = detect_layout(list(state), file)
    folded = any(m in k for k in state for m in FOLDED_MARKERS)
    scores = _scores(state, layout, folded)
    variant, score = _best(scores)
    # Some variants differ only in settings no weight records (MobileCLIP-B / B (LT) / MobileCLIP2-B: the same
    # ViT-B/16, up to open_clip's zero head bias): the file loads into each, and only the user knows which it is.
    also = tuple(n for n, sc in scores.items() if n != variant and score > 0 and sc >= score - SAME_ARCHITECTURE)
    params = sum(v.numel() for k, v in state.items() if v.is_floating_point() and not k.endswith(("running_mean",
                                                                                                     "running_var")))
    return CheckpointInfo(file, layout, folded, variant, score, len(state), params, also)


def _few(keys: set[str], n: int = 3) -> str:
    shown = sorted(keys)[:n]
    rest = len(keys) - len(shown)
    return ", ".join(shown) + (f" and {rest} more" if rest > 0 else "")


def _family(layout: str, variant: Variant) -> str:
    """Which renaming a file in `layout` needs: open_clip's CLIP names, or the official names of the family."""
    return "clip" if layout == OPENCLIP_NATIVE else variant.family


def to_canonical(state: dict[str, torch.Tensor], layout: str, target: dict[str, torch.Tensor],
                 variant: Variant) -> dict[str, torch.Tensor]:
    """Rename an official state dict to our names; drop open_clip's all-zero head bias if the variant has none."""
    if layout in RENAMED_LAYOUTS:
        from mobileclip_deploy.layouts import from_official

        family = _family(layout, variant)
        reverse = {official_key(k, family)[0]: k for k in target}
        out = {}
        for key, value in state.items():
            ours = reverse.get(key, key)
            transform = official_key(ours, family)[1] if key in reverse else None
            out[ours] = from_official(value, transform, target[ours].shape) if key in reverse else value
        return out
    out = dict(state)
    for bias in HEAD_BIAS_KEYS:
        if bias in out and bias not in target:
            del out[bias]  # all zero: `give_head_bias` only adds a bias the file needs
    return out


def give_head_bias(model: nn.Module, raw: dict[str, torch.Tensor], layout: str) -> bool:
    """Add a bias to a bias-free image head when the checkpoint's head has a non-zero one.

    open_clip's MCi/ViT heads are `Linear(bias=True)` and train that bias, so every open_clip fine-tune of
    MobileCLIP-S1/S2/B carries one; computing `x @ W` without it would be silently wrong. A zero bias is dropped
    instead, so the model keeps the official (bias-free) layout for official and converted weights.
    """
    family = model.variant.family
    for key in HEAD_BIAS_KEYS:
        name = official_key(key, family)[0] if layout == "official" else key
        if name not in raw or not torch.count_nonzero(raw[name]):
            continue
        owner_path, _, attr = key.removesuffix(".bias").rpartition(".")
        owner = model.get_submodule(owner_path)
        head = getattr(owner, attr, None)
        if not isinstance(head, nn.Linear) or head.bias is not None:
            return False
        with_bias = nn.Linear(head.in_features, head.out_features, bias=True)
        with torch.no_grad():
            with_bias.weight.copy_(head.weight)
            with_bias.bias.zero_()
        setattr(owner, attr, with_bias)
        return True
    return False


def check_values(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], file: Path,
                 name_in_file: Callable[[str], tuple[str, tuple[int, ...]]]) -> str | None:
    """Refuse integer or non-finite weights for float parameters; return the half dtype that will be upcast.

    Without this an int8/int64 file or one with NaN/inf loads silently and every score is NaN or uniform.
    """
    half: set[str] = set()
    for key, want in target.items():
        have = state[key]
        if not want.is_floating_point():
            continue
        shown = name_in_file(key)[0]
        if not have.is_floating_point():
            raise UserError(f"{file}: tensor {shown} is {str(have.dtype).removeprefix('torch.')}, but the model "
                            "needs floating-point weights there (a quantized or corrupted checkpoint?).")
        bad = have.numel() - int(torch.isfinite(have).sum())
        if bad:
            raise UserError(f"{file}: tensor {shown} holds {bad} non-finite value(s) (NaN or inf) of "
                            f"{have.numel()}; the checkpoint is corrupt or from a diverged run.")
        if have.dtype in (torch.float16, torch.bfloat16):
            half.add(str(have.dtype).removeprefix("torch."))
    return "+".join(sorted(half)) or None


def load_checkpoint_into(model: nn.Module, path: str | os.PathLike[str],
                         model_flag: str = "--model {}") -> CheckpointInfo:
    """Strictly load `path` into `model` (a CLIP); a folded checkpoint folds the model first."""
    from mobileclip_deploy.reparam import reparameterize

    variant: Variant = model.variant
    raw, file = read_state_dict(path)
    layout = detect_layout(list(raw), file)
    folded = any(m in k for k in raw for m in FOLDED_MARKERS)
    if folded:
        reparameterize(model, inplace=True)
    give_head_bias(model, raw, layout)
    target = canonical_state_dict(model)
    state = to_canonical(raw, layout, target, variant)

    def in_file(key: str) -> tuple[str, tuple[int, ...]]:
        """A model key's name and expected shape as the checkpoint's layout spells them, so users can find it."""
        if layout not in RENAMED_LAYOUTS:
            return key, tuple(target[key].shape)
        name, transform = official_key(key, _family(layout, variant))
        return name, tuple(to_official(target[key], transform).shape)

    missing, unexpected = set(target) - set(state), set(state) - set(target)
    if missing or unexpected:
        guess, score = guess_variant(raw, layout, folded)
        if guess is not None and guess != variant.name and score > 0.9:
            raise UserError(f"{file} does not fit {variant.name}: its keys look like a {guess} checkpoint "
                            f"({score:.0%} of keys and shapes match). Use {model_flag.format(guess)}.")
        parts = [f"{file} does not fit {variant.name} ({layout} layout, {'folded' if folded else 'train-time'})."]
        if missing:
            parts.append(f"Missing {len(missing)} keys: {_few({in_file(k)[0] for k in missing})}.")
        if unexpected:
            parts.append(f"Unexpected {len(unexpected)} keys: {_few(unexpected)}.")
        raise UserError(" ".join(parts))
    wrong = sorted((*in_file(k), k) for k in target if tuple(state[k].shape) != tuple(target[k].shape))
    if wrong:
        examples = "; ".join(f"{name}: file {tuple(raw.get(name, state[k]).shape)} vs model {shape}"
                             for name, shape, k in wrong[:3])
        raise UserError(f"{file} has {len(wrong)} tensors of the wrong shape for {variant.name}: {examples}.")
    upcast = check_values(state, target, file, in_file)
    model.load_state_dict(state, strict=True)
    params = sum(v.numel() for v in state.values() if v.is_floating_point())
    info = CheckpointInfo(file, layout, folded, variant.name, 1.0, len(state), params, upcast_from=upcast)
    model.checkpoint_info = info  # so callers (the CLI) can say what was loaded, e.g. that it was upcast
    return info
