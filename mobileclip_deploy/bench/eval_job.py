"""What `eval` runs, decided apart from its command line: the artifacts that stand in for which tower, whether the
eager model is needed (a tower no artifact covers, or the fp32 reference the artifacts are compared with), which
encoders run, and what the summary says."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mobileclip_deploy.bench.artifacts import Artifact
from mobileclip_deploy.bench.evaluate import (
    EvalPlan,
    EvalResult,
    ImageFn,
    TextFn,
    artifact_encoder,
    choose_artifacts,
    evaluate,
    plan_eval,
    same_checkpoint,
    text_identity,
    torch_encoders,
)
from mobileclip_deploy.registry import Variant

EAGER = "eager PyTorch (folded)"


@dataclass
class Encoders:
    """The towers an evaluation runs, the text tower's identity (the classifier cache key) and, when artifacts are
    judged against it, the fp32 reference (image, text, its identity)."""

    image: ImageFn
    text: TextFn
    identity: str | None
    reference: tuple[ImageFn, TextFn, str | None] | None


@dataclass
class EvalJob:
    data: Path
    variant: Variant
    by_tower: dict[str, Artifact]  # at most one artifact per tower; the others run in eager PyTorch
    plan: EvalPlan
    random_weights: bool  # --random-weights
    reference: bool  # artifacts are compared with the eager fp32 model (weights were given for it)

    @classmethod
    def plan_for(cls, data: Path, *, model: str | None, checkpoint: Path | None, random_weights: bool,
                 artifacts: list[Path], backend: str | None, scheme: str | None, templates: str, classes: str,
                 class_map: Path | None, limit_per_class: int | None) -> EvalJob:
        """Every refusal (artifacts, their weights, the data and its class map) before any model loads."""
        variant, by_tower = choose_artifacts(artifacts, backend, scheme, model)
        if checkpoint is not None and by_tower:
            same_checkpoint(by_tower.values(), checkpoint)
        plan = plan_eval(data, templates, classes, class_map, limit_per_class)
        return cls(data, variant, by_tower, plan, random_weights,
                   bool(by_tower) and (checkpoint is not None or random_weights))

    @property
    def needs_model(self) -> bool:
        """The eager model runs a tower no artifact covers, or is the fp32 reference."""
        return len(self.by_tower) < 2 or self.reference

    @property
    def what(self) -> dict[str, str]:
        """What runs each tower: an artifact's file name, or eager PyTorch."""
        return {t: self.by_tower[t].path.name if t in self.by_tower else EAGER for t in ("image", "text")}

    @property
    def random_artifacts(self) -> list[str]:
        """Artifacts exported without a checkpoint (their manifest entry says so)."""
        return [a.path.name for a in self.by_tower.values()
                if a.manifest_entry is not None and a.manifest_entry.get("checkpoint_sha256") is None]

    @property
    def unverified(self) -> list[str]:
        """Artifacts without a manifest entry: which weights they carry is not known."""
        return [a.path.name for a in self.by_tower.values() if a.manifest_entry is None]

    @property
    def random(self) -> bool:
        """Whether the accuracy is of random weights (asked for, or the artifacts were exported so)."""
        return self.random_weights or bool(self.random_artifacts)

    def identity(self, ckpt_sha: str | None) -> str | None:
        return text_identity(self.by_tower.get("text"), self.variant.name, ckpt_sha)

    def announcement(self, ckpt_sha: str | None) -> str:
        """How much work this is (see EvalPlan.announcement), knowing whether the classifier is cached."""
        from mobileclip_deploy.zeroshot import classifier_cached, imagenet_classnames

        names = imagenet_classnames()
        return self.plan.announcement(classifier_cached(self.identity(ckpt_sha), [names[i] for i in self.plan.class_ids],
                                                        self.plan.templates))

    def encoders(self, net: nn.Module | None, ckpt_sha: str | None) -> Encoders:
        """Load the artifacts' runtimes; the eager towers are `net` folded (None when `needs_model` is false)."""
        eager_image = eager_text = None
        if net is not None:
            from mobileclip_deploy import reparameterize

            eager_image, eager_text = torch_encoders(reparameterize(net))
        image = self.by_tower.get("image")
        text = self.by_tower.get("text")
        return Encoders(artifact_encoder(image.path, image.backend) if image else eager_image,
                        artifact_encoder(text.path, text.backend) if text else eager_text,
                        self.identity(ckpt_sha),
                        (eager_image, eager_text, text_identity(None, self.variant.name, ckpt_sha))
                        if self.reference else None)

    def evaluate(self, encoders: Encoders, batch_size: int, progress: Callable[[str, int, int], None] | None = None,
                 notice: Callable[[str], None] | None = None) -> EvalResult:
        return evaluate(encoders.image, encoders.text, self.plan, self.variant.image_size, self.variant.interpolation,
                        batch_size=batch_size, progress=progress, text_identity=encoders.identity,
                        reference=encoders.reference, notice=notice)

    def summary(self, result: EvalResult) -> dict[str, Any]:
        """The `--json` / `-o` result."""
        what = self.what
        return {"model": self.variant.name, "data": str(self.data), "image": what["image"], "text": what["text"],
                "random_weights": self.random, **result.as_dict(), "classes": self.plan.class_set,
                "template_set": self.plan.template_set}
