"""The inputs and references an export's checks share: parity inputs, folded PyTorch outputs, calibration data.

The pipeline builds one per run; `verify --arch arm64` rebuilds it from the manifest, so both judge an artifact by
the same rule (`judge`) on the very same inputs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobileclip_deploy.exporters import calibration as calib_mod
from mobileclip_deploy.exporters.fold import fold_affine
from mobileclip_deploy.exporters.parity import run_batched, top1_agreement
from mobileclip_deploy.exporters.schemes import Scheme
from mobileclip_deploy.exporters.wrappers import tower_module
from mobileclip_deploy.hashing import sha256_path

PARITY_IMAGES = 8
ZERO_SHOT_TEMPLATE = "a photo of a {}."


class ParityFailure(Exception):
    """An artifact that does not compute what the folded PyTorch model computes: it is not written."""


def _prompts(count: int, offset: int = 0) -> list[str]:
    """`count` ImageNet prompts spread over classes and templates; another `offset` gives a disjoint-ish set."""
    from mobileclip_deploy.zeroshot import imagenet_classnames, openai_templates

    names, templates = imagenet_classnames(), openai_templates()
    return [templates[(7 * i + offset) % len(templates)].replace("{}", names[(i * 997 // count + offset) % len(names)])
            for i in range(count)]


class Context:
    """Everything shared by the jobs of one run: towers, reference outputs, calibration data."""

    def __init__(self, folded: nn.Module, variant, request) -> None:
        from mobileclip_deploy.tokenizer import tokenize

        self.folded, self.variant, self.request = folded, variant, request
        self.towers = {t: tower_module(folded, t, variant.image_size, variant.context_length) for t in request.towers}
        # Artifacts are made from the affine-folded towers; parity compares them with the plain folded ones.
        self.export_towers = {t: fold_affine(m) for t, m in self.towers.items()}
        self.calibration_files: list[Path] = []
        self.calibration: np.ndarray | None = None
        parity_files: list[Path] = []
        if request.calibration is not None:
            images = calib_mod.list_images(request.calibration)
            self.calibration_files = calib_mod.pick(images, request.calibration_limit)
            self.calibration = calib_mod.load_batch(self.calibration_files, variant.image_size, variant.interpolation)
            # Compare on photos the calibration did not see, when the folder has enough of them.
            chosen = set(self.calibration_files)
            unseen = [p for p in images if p not in chosen]
            held_out = len(unseen) >= PARITY_IMAGES
            parity_files = calib_mod.pick(unseen if held_out else images, PARITY_IMAGES)
            self.parity_images = calib_mod.load_batch(parity_files, variant.image_size, variant.interpolation)
            self.parity_source = "held_out_images" if held_out else "calibration_images"
        else:
            self.parity_images = calib_mod.synthetic_batch(PARITY_IMAGES, variant.image_size)
            self.parity_source = "synthetic_images"
        # Cache keys name photos by content: other photos under the same names are other inputs.
        self.calibration_sha256 = [sha256_path(f) for f in self.calibration_files]
        self.parity_inputs = {"source": self.parity_source, "sha256": [sha256_path(f) for f in parity_files]}
        self.prompts = _prompts(PARITY_IMAGES)
        self.tokens = tokenize(self.prompts, variant.context_length).to(torch.int32).numpy()
        self.calibration_tokens = tokenize(_prompts(request.calibration_limit, offset=500),
                                           variant.context_length).to(torch.int32).numpy()
        self._references: dict[str, np.ndarray] = {}
        self._class_embeddings: np.ndarray | None = None

    def inputs(self, tower: str) -> np.ndarray:
        return self.parity_images if tower == "image" else self.tokens

    def reference(self, tower: str) -> np.ndarray:
        """The folded PyTorch tower's outputs on the parity inputs, computed on first use (never without parity)."""
        if tower not in self._references:
            self._references[tower] = self.eager(tower, self.inputs(tower))
        return self._references[tower]

    def calibration_for(self, tower: str) -> np.ndarray | None:
        return self.calibration if tower == "image" else self.calibration_tokens

    def eager(self, tower: str, x: np.ndarray, module: nn.Module | None = None) -> np.ndarray:
        module = module or self.towers[tower]
        with torch.no_grad():
            return run_batched(lambda b: module(torch.from_numpy(b)).numpy(), x)

    def search_inputs(self, tower: str) -> tuple[np.ndarray, np.ndarray, Any]:
        """What `--quant auto` scores a tower on: calibration inputs, zero-shot anchors, the targets."""
        from mobileclip_deploy.exporters.autoquant import check_targets

        if tower == "image":
            inputs, anchors = self.calibration, self.class_embeddings()
        else:  # a prompt's top-1 photo among the calibration photos (fp32 image embeddings)
            with torch.no_grad():
                anchors = run_batched(lambda b: self.folded.encode_image(torch.from_numpy(b)).numpy(), self.calibration)
            inputs = self.calibration_tokens
        return inputs, anchors, check_targets(self.request.min_cos, self.request.min_agreement)

    def class_embeddings(self) -> np.ndarray:
        """ImageNet class prompt embeddings of the fp32 text tower (computed once per run)."""
        if self._class_embeddings is None:
            from mobileclip_deploy.zeroshot import class_text_embeddings, imagenet_classnames

            with torch.no_grad():
                self._class_embeddings = class_text_embeddings(
                    self.folded.encode_text, imagenet_classnames(), [ZERO_SHOT_TEMPLATE],
                    context_length=self.variant.context_length).numpy()
        return self._class_embeddings


def judge(ctx: Context, tower: str, scheme: Scheme, check: str, out: np.ndarray, threshold: float,
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parity of `out` (outputs on the first len(out) parity inputs) against the folded PyTorch reference; the
    centre and spread of the centered metrics come from every parity input's reference (verify/gate.py).

    The one rule for every runtime: host parity and `verify --arch arm64` both call it. The verdict is
    verify/gate.py's (`threshold` is the scheme class's minimum cosine; `CLASS.METRIC` thresholds of the request
    set the other limits); retrieval agreement pairs the outputs with the other tower's fp32 reference.
    """
    from mobileclip_deploy.verify.gate import assess

    other = "text" if tower == "image" else "image"
    if other not in ctx.towers:  # the partner side of retrieval, even when only one tower is exported
        ctx.towers[other] = tower_module(ctx.folded, other, ctx.variant.image_size, ctx.variant.context_length)
    every = ctx.reference(tower)
    inputs = ctx.inputs(tower)
    cls = scheme.threshold_class
    overrides = {**ctx.request.thresholds, cls: threshold}
    result = {"check": check, **assess(every[: len(out)], out, cls, ctx.reference(other), tower == "image",
                                       overrides, population=every),
              "threshold": threshold, "inputs": (ctx.parity_source if tower == "image" else "imagenet_prompts"),
              "count": len(out), "inputs_sha256": inputs_sha256(inputs), **(extra or {})}
    if tower == "image" and scheme.bits < 16:
        result["zero_shot_top1_agreement"] = top1_agreement(every[: len(out)], out, ctx.class_embeddings())
    return result


def inputs_sha256(inputs: np.ndarray) -> str:
    """Identifies the parity inputs, so a later check can prove it used the very same ones."""
    return hashlib.sha256(np.ascontiguousarray(inputs).tobytes()).hexdigest()[:16]
