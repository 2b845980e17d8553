"""The model zoo as data: every MobileCLIP variant, its encoders, preprocessing and published figures."""

from __future__ import annotations

import csv
import difflib
import functools
import re
from dataclasses import dataclass, field
from importlib import resources

from mobileclip_deploy.errors import UserError
from mobileclip_deploy.models.mci import MCI0, MCI1, MCI2, MCI3, MCI4, MCiConfig
from mobileclip_deploy.models.text import TextConfig
from mobileclip_deploy.models.vit import VIT_B16_CLIP, VIT_B16_OFFICIAL, VIT_B16_TIMM, VIT_L14, ViTConfig

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
NO_MEAN, NO_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

MCT = TextConfig(layers=4, mct=True)
BASE_TEXT = TextConfig()
BASE_TEXT_CAUSAL = TextConfig(causal=True)
WIDE_TEXT = TextConfig(width=768, heads=12)
CLIP_TEXT_B = TextConfig(causal=True)
CLIP_TEXT_L = TextConfig(width=768, heads=12, causal=True)


@dataclass(frozen=True)
class Published:
    """Figures from the paper/README (iPhone 12 Pro Max, Core ML), with their source."""

    image_params_m: float | None
    text_params_m: float | None
    image_latency_ms: float | None
    text_latency_ms: float | None
    total_latency_ms: float | None
    imagenet_top1: float | None
    avg38: float | None
    source: str


@dataclass(frozen=True)
class Variant:
    name: str
    display_name: str
    image: MCiConfig | ViTConfig
    text: TextConfig
    embed_dim: int
    image_size: int
    # native state-dict layout: "official" (apple/ml-mobileclip), "openclip" (open_clip + timm: visual.trunk.*,
    # text.*) or "openclip-native" (open_clip's own CLIP: visual.conv1, visual.transformer.*, top-level text)
    layout: str
    frontier_name: str  # row in frontier.csv
    mean: tuple[float, float, float] = NO_MEAN
    std: tuple[float, float, float] = NO_STD
    interpolation: str = "bilinear"
    aliases: tuple[str, ...] = field(default=())

    @property
    def context_length(self) -> int:
        return self.text.context_length

    @property
    def family(self) -> str:
        return "mci" if isinstance(self.image, MCiConfig) else "vit"

    @property
    def published(self) -> Published:
        return published_figures()[self.frontier_name]


def _mci(cfg: MCiConfig, official: bool) -> MCiConfig:
    return MCiConfig(**{**cfg.__dict__, "head_bias": not official})


VARIANTS: tuple[Variant, ...] = (
    Variant("mobileclip-s0", "MobileCLIP-S0", _mci(MCI0, True), MCT, 512, 256, "official", "MobileCLIP-S0"),
    Variant("mobileclip-s1", "MobileCLIP-S1", _mci(MCI1, True), BASE_TEXT, 512, 256, "official", "MobileCLIP-S1"),
    Variant("mobileclip-s2", "MobileCLIP-S2", _mci(MCI2, True), BASE_TEXT, 512, 256, "official", "MobileCLIP-S2"),
    Variant("mobileclip-b", "MobileCLIP-B", VIT_B16_OFFICIAL, BASE_TEXT_CAUSAL, 512, 224, "official",
            "MobileCLIP-B"),
    Variant("mobileclip-b-lt", "MobileCLIP-B (LT)", VIT_B16_OFFICIAL, BASE_TEXT_CAUSAL, 512, 224, "official",
            "MobileCLIP-B (LT)", aliases=("mobileclip_blt", "MobileCLIP-B-LT")),
    Variant("mobileclip2-s0", "MobileCLIP2-S0", _mci(MCI0, False), BASE_TEXT, 512, 256, "openclip",
            "MobileCLIP2-S0"),
    Variant("mobileclip2-s2", "MobileCLIP2-S2", _mci(MCI2, False), BASE_TEXT, 512, 256, "openclip",
            "MobileCLIP2-S2"),
    Variant("mobileclip2-b", "MobileCLIP2-B", VIT_B16_TIMM, BASE_TEXT_CAUSAL, 512, 224, "openclip", "MobileCLIP2-B"),
    Variant("mobileclip2-s3", "MobileCLIP2-S3", MCI3, WIDE_TEXT, 768, 256, "openclip", "MobileCLIP2-S3",
            OPENAI_MEAN, OPENAI_STD),
    Variant("mobileclip2-s4", "MobileCLIP2-S4", MCI4, WIDE_TEXT, 768, 256, "openclip", "MobileCLIP2-S4",
            OPENAI_MEAN, OPENAI_STD),
    Variant("mobileclip2-l-14", "MobileCLIP2-L-14", VIT_L14, WIDE_TEXT, 768, 224, "openclip", "MobileCLIP2-L/14",
            OPENAI_MEAN, OPENAI_STD, "bicubic"),
)



def _quick(v: ViTConfig | TextConfig) -> ViTConfig | TextConfig:
    return type(v)(**{**v.__dict__, "quick_gelu": True})


def _teacher(name: str, display: str, image: ViTConfig, text: TextConfig, embed_dim: int) -> tuple[Variant, ...]:
    """A CLIP teacher in its plain-GELU (DataComp / DFN weights) and QuickGELU (OpenAI weights) flavours."""
    return tuple(Variant(f"{name}{suffix}", f"{display}{suffix}", img, txt, embed_dim, 224, "openclip-native", "",
                         OPENAI_MEAN, OPENAI_STD, "bicubic")
                 for suffix, img, txt in (("", image, text), ("-quickgelu", _quick(image), _quick(text))))


# Teachers for `reinforce`: open_clip's ViT-B-16 / ViT-L-14 (and -quickgelu), loaded from their local checkpoints.
# Not in VARIANTS (the deployable zoo with published figures); `get_variant` finds them.
TEACHERS: tuple[Variant, ...] = (
    *_teacher("openclip-vit-b-16", "ViT-B-16", VIT_B16_CLIP, CLIP_TEXT_B, 512),
    *_teacher("openclip-vit-l-14", "ViT-L-14", VIT_L14, CLIP_TEXT_L, 768),
)


def _normalize(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@functools.cache
def _index() -> dict[str, Variant]:
    index: dict[str, Variant] = {}
    for v in (*VARIANTS, *TEACHERS):
        for alias in (v.name, v.display_name, v.frontier_name, *v.aliases):
            if alias:
                index[_normalize(alias)] = v
    return index


def get_variant(name: str) -> Variant:
    """Look a variant up by registry, official (`mobileclip_s0`) or open_clip (`MobileCLIP2-S0`) name."""
    found = _index().get(_normalize(name))
    if found is not None:
        return found
    names = [v.name for v in (*VARIANTS, *TEACHERS)]
    close = difflib.get_close_matches(name.lower().replace("_", "-"), names, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise UserError(f"unknown model {name!r}.{hint} Known models: {', '.join(names)}.")


def list_variants() -> tuple[Variant, ...]:
    return VARIANTS


@functools.cache
def published_figures() -> dict[str, Published]:
    """Rows of the shipped frontier.csv (see data/NOTICE.md for provenance), keyed by model name."""

    def num(value: str) -> float | None:
        return float(value) if value.strip() else None

    text = resources.files("mobileclip_deploy.data").joinpath("frontier.csv").read_text(encoding="utf-8")
    return {
        row["name"]: Published(num(row["image_params_M"]), num(row["text_params_M"]), num(row["image_latency_ms"]),
                               num(row["text_latency_ms"]), num(row["total_latency_ms"]),
                               num(row["imagenet_zs_top1"]), num(row["avg38"]), row["source"])
        for row in csv.DictReader(text.splitlines())
    }
