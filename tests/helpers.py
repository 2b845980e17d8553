"""What several test modules share (test modules never import each other): the CLI refusal check, the tiny model and
its exports, a backend that exists only in the tests (it joins the registry like a real one and runs through plan,
export, parity, manifest, bench and eval without any other module naming it), fake export folders and app projects,
benchmark records, labelled folders of the shared photos, and the outlier conv tower of the `auto` searches."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from conftest import REPO_ROOT
from goldens import golden_tensor
from rich.console import Console
from tiny_artifacts import tiny_onnx
from torch import nn
from typer.testing import CliRunner, Result

from mobileclip_deploy import runtimes
from mobileclip_deploy.bench.records import Measurement, make_record
from mobileclip_deploy.cli import app
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.exporters import backends, pipeline
from mobileclip_deploy.exporters.backends import Backend, Build, resolve_pairs
from mobileclip_deploy.exporters.schemes import FP16, FP32, Scheme
from mobileclip_deploy.hashing import sha256_path
from mobileclip_deploy.models.clip import CLIP
from mobileclip_deploy.models.mci import MCiConfig
from mobileclip_deploy.models.text import TextConfig
from mobileclip_deploy.registry import get_variant

# A MobileCLIP-S0-shaped model (same blocks, a fraction of the width) for export tests where full size proves
# nothing more.


TINY = dataclasses.replace(
    get_variant("mobileclip-s0"), name="tiny-s0", display_name="Tiny S0", embed_dim=32, image_size=64,
    image=MCiConfig((1, 1, 1, 1), (16, 32, 32, 64), 2.0, (3,), (False, False, True, True)),
    text=TextConfig(width=64, heads=2, layers=1, mct=True))
WEIGHTS = "tiny-golden-weights"  # stands in for a checkpoint sha256


def tiny_model() -> CLIP:
    """The tiny model with golden-recipe weights (random init would make every output nearly constant)."""
    model = CLIP(TINY)
    state = {k: golden_tensor(k, list(v.shape), str(v.dtype).removeprefix("torch."))
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model.eval()


def synthetic_tiny_model() -> CLIP:
    """The tiny model with the synthetic weights `--random-weights` uses (golden-qk2: its text tower separates
    prompts too, where the golden recipe's tiny text tower leaves the parity inputs too alike to judge)."""
    from mobileclip_deploy.models.synthetic import load_synthetic

    model = CLIP(TINY)
    load_synthetic(model)
    return model.eval()


def tiny_image_tower() -> tuple[torch.nn.Module, torch.Tensor]:
    """The tiny model's folded image tower, as the pipeline hands it to a backend, and its example input."""
    from mobileclip_deploy import reparameterize
    from mobileclip_deploy.exporters.fold import fold_affine
    from mobileclip_deploy.exporters.wrappers import example_input, tower_module

    tower = fold_affine(tower_module(reparameterize(tiny_model()), "image", TINY.image_size, TINY.context_length))
    return tower.eval(), example_input("image", TINY.image_size, TINY.context_length)


def export(out: Path, quants: list[str], *, towers=("image", "text"), weights: str = WEIGHTS, options=None, **request):
    request = pipeline.ExportRequest(pairs=resolve_pairs([], quants), output_dir=out, towers=towers,
                                     options=options or {}, **request)
    return pipeline.run(request, tiny_model(), TINY, weights, Console(quiet=True))


def entries(out: Path) -> dict[str, dict]:
    return {e["file"]: e for e in json.loads((out / "manifest.json").read_text())["artifacts"]}


@dataclasses.dataclass
class AutoRebuild:
    """An `auto` export of the tiny model and its rebuild from the recipe it wrote (both passed the gate)."""

    first: pipeline.ArtifactResult
    entry: dict  # the auto artifact's manifest entry
    again: pipeline.ArtifactResult
    rebuilt: dict  # the recipe rebuild's manifest entry

    @property
    def plan(self) -> dict:
        return self.entry["details"]["auto_plan"]


def auto_then_recipe(tmp_path: Path, quant: str, tower: str, photos: Path) -> AutoRebuild:
    """Export `quant` (BACKEND:auto) for `tower`, check the recipe it wrote names the plan's kept modules under the
    backend's keep key, and export again from that recipe."""
    from mobileclip_deploy.exporters.backends import get_backend
    from mobileclip_deploy.exporters.recipe import load_recipe

    backend = get_backend(quant.partition(":")[0])
    (first,) = export(tmp_path / "auto", [quant], towers=(tower,), calibration=photos, calibration_limit=8,
                      min_agreement=0.9)
    assert first.status == "ok", first.message
    entry = entries(tmp_path / "auto")[first.file]
    plan = entry["details"]["auto_plan"]
    assert entry["parity"]["passed"] and plan["backend"] == backend.name
    recipe = load_recipe(tmp_path / "auto" / entry["details"]["recipe"])
    assert recipe.quants == [f"{backend.name}:{backend.scheme('auto').rebuilds_as}"]
    assert recipe.keep == {backend.name: {tower: plan["keep"]}}
    (again,) = export(tmp_path / "recipe", recipe.quants, towers=(tower,), calibration=photos, calibration_limit=8,
                      keep=recipe.keep)
    assert again.status == "ok", again.message
    return AutoRebuild(first, entry, again, entries(tmp_path / "recipe")[again.file])


def refusal(*args: object) -> str:
    """Run the CLI in-process and return its refusal (see `refused`)."""
    return refused(CliRunner().invoke(app, [str(a) for a in args]))


def refused(result: Result) -> str:
    """A CLI run's refusal, one line unwrapped: a UserError, exit code 2, `error:` on stderr, no traceback."""
    assert isinstance(result.exception, UserError), result.output
    assert result.exit_code == 2 and "error:" in result.stderr and "Traceback" not in result.output
    return " ".join(str(result.exception).split())


class Recording(Backend):
    """Writes the tower as a TorchScript file (`.rec`) that its runtime runs; records what the export was given."""

    name = "test-recording"
    suffix = ".rec"
    schemes = (FP32, FP16, Scheme("w8a8", 8, static=True, help="static int8 (stands in: calibration photos)"))
    help = "test-only backend"
    runtime = "test-recording"
    platform = "android"
    option_defaults = {"note": ""}
    option_refusals = {"note": "--note applies to the test backend"}
    seen: list[Build] = []

    def export(self, build: Build) -> tuple[dict, object]:
        Recording.seen.append(build)
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(build.module, (build.example,)), str(build.path))
        return {"calibration_sha256": build.context.calibration_sha256, "note": build.options["note"]}, None


def _load(path: Path, threads: int = 1) -> runtimes.Runner:
    module = torch.jit.load(str(path))
    image = path.name.split("_")[1] == "image"

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return runtimes.Runner(run, [1, 3, 64, 64] if image else [1, 77], np.float32 if image else np.int32,
                           {"name": "test-recording", "version": "0"})


@contextlib.contextmanager
def registered(cls: type[Backend] = Recording) -> Iterator[Backend]:
    """Register `cls` (and its runtime) for the duration of a test; the registry is as before afterwards."""
    runtime = runtimes.Runtime(cls.runtime, (cls.suffix,), _load)
    backends.all_backends()
    runtimes._discover()
    backends.register(cls)
    runtimes.register(runtime)
    try:
        yield backends.get_backend(cls.name)
    finally:
        del backends._BACKENDS[cls.name]
        del runtimes._RUNTIMES[runtime.name]
        Recording.seen.clear()


# ------------------------------------------------------------------------------------------ export folders, apps

BUNDLE_FIXTURE = Path(__file__).parent / "fixtures" / "manifest_example.json"


def export_folder(tmp_path: Path) -> Path:
    """An export folder of tiny ONNX towers (8x8 photos) and their manifest, for `bench`, `eval` and `frontier`."""
    folder = tmp_path / "export"
    folder.mkdir()
    entries = []
    for tower in ("image", "text"):
        p = tiny_onnx(folder / f"mobileclip-s0_{tower}_onnx_fp32.onnx", tower)
        shape = [1, 3, 8, 8] if tower == "image" else [1, 77]
        entries.append({"file": p.name, "sha256": sha256_path(p), "model": "mobileclip-s0", "tower": tower,
                        "backend": "onnx", "scheme": "fp32", "inputs": [{"name": "x", "shape": shape}],
                        "status": "ok"})
    (folder / "manifest.json").write_text(json.dumps({"model": "mobileclip-s0", "artifacts": entries}))
    return folder


def make_export(root: Path, *, with_coreml: bool = True, android: bool = False, towers=("image", "text")) -> Path:
    """A fake export folder shaped like the manifest fixture (tiny files instead of models, their real sha256);
    `android` adds ExecuTorch and LiteRT entries beside the fixture's ONNX ones."""
    export = root / "export"
    manifest = json.loads(BUNDLE_FIXTURE.read_text())
    if not with_coreml:
        manifest["artifacts"] = [a for a in manifest["artifacts"] if a["backend"] != "coreml"]
    if android:
        onnx = next(a for a in manifest["artifacts"] if a["backend"] == "onnx")
        manifest["artifacts"].append({**onnx, "tower": "text", "file": onnx["file"].replace("_image_", "_text_")})
        for backend, suffix in (("executorch-xnnpack", "pte"), ("litert", "tflite")):
            manifest["artifacts"] += [{**a, "backend": backend, "file": a["file"].replace("_onnx_", f"_{backend}_")
                                       .rsplit(".", 1)[0] + f".{suffix}"}
                                      for a in manifest["artifacts"] if a["backend"] == "onnx"]
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["tower"] in towers]
    for artifact in manifest["artifacts"]:
        path = export / artifact["file"]
        if path.suffix == ".mlpackage":
            (path / "Data" / "com.apple.CoreML").mkdir(parents=True)
            (path / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"\0" * 1000)
            (path / "Manifest.json").write_text("{}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(artifact["file"].encode())
        artifact["sha256"] = sha256_path(path)
    (export / "tokenizer").mkdir(parents=True)
    (export / "tokenizer" / "merges.txt").write_text("i n\nt h\n")
    (export / "tokenizer" / "vocab.json").write_text('{"a</w>": 320}')
    manifest["tokenizer"]["sha256"] = {key: sha256_path(export / manifest["tokenizer"][key])
                                       for key in ("merges", "vocab")}
    (export / "manifest.json").write_text(json.dumps(manifest))
    return export


def make_app(root: Path) -> Path:
    """A fake iOS demo project for `bundle ios`."""
    demo = root / "MobileCLIPDemo"
    (demo / "Resources" / "Models").mkdir(parents=True)
    (demo / "project.yml").write_text("name: MobileCLIPDemo\n")
    return demo


# ------------------------------------------------------------------------------------------ benchmark records

DEVICE = {"model": "x86_64", "os": "Linux", "soc": "Test CPU", "name": "host", "cpu_count": 2}
ARTIFACT = {"file": "m_image_onnx_fp32.onnx", "sha256": "a" * 64, "model": "mobileclip-s0", "tower": "image",
            "backend": "onnx", "scheme": "fp32"}


def bench_record(**kw) -> dict:
    """A valid host record of four samples (median 2.5 ms)."""
    m = Measurement([1.0, 2.0, 3.0, 4.0], load_ms=12.0, first_inference_ms=9.0, warmup=5, peak_memory_mb=100.0)
    return make_record(target="host", device=DEVICE, runtime={"name": "onnxruntime", "version": "1.32.0"},
                       artifact=ARTIFACT, measurement=m, threads=1, **kw)


# ------------------------------------------------------------------------------------------ labelled photo folders

# Same location rule as conftest's `shared_dir`; a missing folder fails these tests rather than skipping them.
SAMPLES = Path(os.environ.get("MOBILECLIP_SHARED") or REPO_ROOT.parent / "shared") / "data" / "imagenet-samples"


def sample_rows(n: int | None = 4) -> list[dict[str, str]]:
    """The first `n` rows of the shared photos' labels.csv (all of them for None)."""
    with open(SAMPLES / "labels.csv") as fh:
        return list(csv.DictReader(fh))[:n]


def wnid_folder(tmp_path: Path, n: int = 4, name: str = "val") -> Path:
    """A folder of wnid folders, one shared photo in each."""
    root = tmp_path / name
    for row in sample_rows(n):
        (root / row["wnid"]).mkdir(parents=True)
        (root / row["wnid"] / row["filename"]).symlink_to(SAMPLES / row["filename"])
    return root


def uneven_folder(tmp_path: Path, name: str = "val") -> Path:
    """Three class folders holding 1, 2 and 3 photos (the extra ones are other classes' photos).

    The sizes differ so that the top-1 depends on which label each photo carries even when a model gives every
    photo the same class (as MobileCLIP on default-init or golden weights does on these photos).
    """
    rows = sample_rows(6)
    root = tmp_path / name
    for folder, photos in ((rows[0], rows[:1]), (rows[1], [rows[1], rows[3]]), (rows[2], [rows[2], *rows[4:6]])):
        (root / folder["wnid"]).mkdir(parents=True)
        for photo in photos:
            (root / folder["wnid"] / photo["filename"]).symlink_to(SAMPLES / photo["filename"])
    return root


def expected_top1(model, root: Path, image_size: int) -> float:
    """Top-1 (%) of `model` on a folder of wnid folders, computed here: labels from labels.csv, the class whose
    simple-template text embedding is nearest (cosine) to each photo's image embedding."""
    from mobileclip_deploy.preprocess import load_image, preprocess_pil
    from mobileclip_deploy.zeroshot import (
        class_text_embeddings,
        imagenet_classnames,
        simple_templates,
    )

    index = {r["wnid"]: int(r["index"]) for r in sample_rows(None)}
    labelled = [(f, index[d.name]) for d in sorted(root.iterdir()) for f in sorted(d.iterdir())]
    classes = sorted({i for _, i in labelled})
    with torch.no_grad():
        text = class_text_embeddings(model.encode_text, [imagenet_classnames()[i] for i in classes],
                                     simple_templates())
        pixels = torch.stack([preprocess_pil(load_image(f), image_size) for f, _ in labelled])
        image = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
    predicted = [classes[j] for j in (image @ text.T).argmax(dim=1).tolist()]
    return 100.0 * sum(p == label for p, (_, label) in zip(predicted, labelled)) / len(labelled)


# ------------------------------------------------------------------------------------------ the `auto` searches' tower

OUTLIER_BLOCK = 2


class Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Conv2d(dim, 2 * dim, 1), nn.GELU(), nn.Conv2d(2 * dim, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mixer = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.mlp = Mlp(dim)

    def forward(self, x):
        x = x + self.mixer(x)
        return x + self.mlp(x)


class TinyTower(nn.Module):
    """pixels (1x3x16x16) -> image_embedding (1x8), blocks named like the MCi towers' (`blocks.N.mlp`)."""

    def __init__(self, outliers: bool, dim: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, dim, 3, stride=2, padding=1)
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(4)])
        self.head = nn.Linear(dim, 8)
        self.proj = nn.Parameter(torch.eye(8) + 0.1 * torch.randn(8, 8))  # an op of the tower itself, like CLIP's
        if outliers:  # one hidden channel 1000x larger, undone by fc2: fp32 output as before, int8 ranges swamped
            mlp = self.blocks[OUTLIER_BLOCK].mlp
            with torch.no_grad():
                mlp.fc1.weight[0] *= 1000
                mlp.fc1.bias[0] *= 1000
                mlp.fc2.weight[:, 0] /= 1000

    def forward(self, pixels):
        return self.head(self.blocks(self.stem(pixels)).mean(dim=(2, 3))) @ self.proj


def assert_palette_plan_keeps_the_outlier_block(plan) -> None:
    """A 4-bit palette search on TinyTower: the block with outliers is the one unit kept at 8 bits, every other unit
    alone stays above 0.999, and the plan (scored on decompressed weights) is under half the fp16 size."""
    assert plan.scheme == "pal4" and plan.keep == [f"blocks.{OUTLIER_BLOCK}.mlp"]
    units = {u["unit"]: u for u in plan.units}
    assert {f"blocks.{i}.mlp" for i in range(4)} <= set(units)
    worst = min(units.values(), key=lambda u: u["min_cosine"])
    assert worst["unit"] == f"blocks.{OUTLIER_BLOCK}.mlp" and worst["min_cosine"] < 0.999
    assert all(u["min_cosine"] > 0.999 for name, u in units.items() if name != worst["unit"])
    chosen = plan.chosen
    assert chosen["min_cosine"] >= 0.999 and chosen["scored_on"] == "weights_decompressed_in_pytorch"
    assert chosen["size_bytes"] < 0.5 * chosen["fp16_size_bytes"]


def search_data() -> tuple[np.ndarray, np.ndarray]:
    """Twelve random 16x16 calibration photos and six random 8-d anchor embeddings (seeded)."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (12, 3, 16, 16)).astype(np.float32)
    anchors = rng.standard_normal((6, 8)).astype(np.float32)
    return images, anchors
