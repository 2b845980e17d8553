"""Model-zoo commands: `models`, `inspect`, `reparam`, `classify`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.table import Table

from mobileclip_deploy.cli.app import app, console, err_console, print_json, progress_bar
from mobileclip_deploy.cli.options import (RANDOM_WARNING, CheckpointOpt, JsonOpt, ModelOpt, RandomWeightsOpt,
                                           load_model_for_cli, upcast_field)
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.registry import list_variants


# Prompts per text-encoder call in `classify` (80 per label): big enough to batch, small enough to show progress.
PROMPT_BATCH = 160


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


@app.command("models")
def models_cmd(as_json: JsonOpt = False) -> None:
    """List every variant with its resolution and the paper's published size, iPhone latency and accuracy."""
    rows = []
    for v in list_variants():
        p = v.published
        rows.append({"name": v.name, "display_name": v.display_name, "resolution": v.image_size,
                     "embed_dim": v.embed_dim, "layout": v.layout, "mean": v.mean, "std": v.std,
                     "interpolation": v.interpolation, "context_length": v.context_length,
                     "published": {"image_params_m": p.image_params_m, "text_params_m": p.text_params_m,
                                   "image_latency_ms": p.image_latency_ms, "text_latency_ms": p.text_latency_ms,
                                   "imagenet_top1": p.imagenet_top1, "source": p.source}})
    if as_json:
        print_json(rows)
        return
    table = Table(title="MobileCLIP variants (published figures: iPhone 12 Pro Max, Core ML)")
    for col in ("model", "res", "params img+txt (M)", "latency img+txt (ms)", "IN-1k top-1", "checkpoint layout"):
        table.add_column(col, justify="left" if col in ("model", "checkpoint layout") else "right",
                         no_wrap=col == "model")
    for r in rows:
        p = r["published"]
        table.add_row(r["name"], str(r["resolution"]), f"{_fmt(p['image_params_m'])} + {_fmt(p['text_params_m'])}",
                      f"{_fmt(p['image_latency_ms'])} + {_fmt(p['text_latency_ms'])}", _fmt(p["imagenet_top1"], "%"),
                      r["layout"])
    console.print(table)


@app.command("inspect")
def inspect_cmd(checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or folder.")],
                as_json: JsonOpt = False) -> None:
    """Say what a checkpoint is: layout, variant, parameter count, and whether it is already folded."""
    from mobileclip_deploy.checkpoint import inspect_checkpoint

    info = inspect_checkpoint(checkpoint)
    result = {"file": str(info.path), "layout": info.layout, "variant": info.variant, "match": round(info.match, 4),
              "folded": info.folded, "tensors": info.num_tensors, "parameters": info.num_params,
              "also_fits": list(info.also_fits)}
    if as_json:
        print_json(result)
        return
    table = Table(show_header=False, title=f"checkpoint {info.path.name}")
    for key, value in result.items():
        if key != "also_fits":
            table.add_row(key, f"{value:.1%}" if key == "match" else f"{value:,}" if isinstance(value, int) and not
                          isinstance(value, bool) else str(value))
    if info.also_fits:
        table.add_row("also fits", f"{', '.join(info.also_fits)}: the same keys and shapes, so the file cannot say "
                      "which it is; pass the --model it was trained as")
    console.print(table)


def _sample_inputs(images: Path | None, size: int, n: int = 4) -> tuple[torch.Tensor, str]:
    from mobileclip_deploy.preprocess import image_files, load_image, preprocess_pil

    if images is None:
        g = torch.Generator().manual_seed(0)
        smooth = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=size, mode="bilinear")
        return smooth.clamp(0, 1), "synthetic smooth images (pass --images DIR to measure on your photos)"
    files = image_files(images)[:n]
    return torch.stack([preprocess_pil(load_image(f), size) for f in files]), f"{len(files)} images from {images}"


def _check_reparam_output(output: Path, checkpoint: Path | None) -> bool:
    """Refuse a destination that would fail or destroy the input, before the work; returns whether a file is replaced."""
    from mobileclip_deploy.atomic import check_destination
    from mobileclip_deploy.checkpoint import resolve_checkpoint_file

    check_destination(output, "--output")
    if checkpoint is not None and output.exists() and output.samefile(resolve_checkpoint_file(checkpoint)):
        raise UserError(f"--output {output} is the input checkpoint; refusing to replace it (choose another file)")
    return output.exists()


def _save_state_dict(state: dict[str, torch.Tensor], path: Path) -> None:
    """`.safetensors` gets safetensors (no pickle under that name); any other name a torch pickle."""
    if path.name.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


@app.command("reparam")
def reparam_cmd(model: ModelOpt, output: Annotated[Path, typer.Option("--output", "-o", help=(
                    "Folded state dict: .safetensors writes safetensors, any other name a torch .pt pickle. "
                    "An existing file is replaced (the output says so); a folder or the input is refused."))],
                checkpoint: CheckpointOpt = None, random_weights: RandomWeightsOpt = False,
                images: Annotated[Path | None, typer.Option(help="Folder of photos to measure the difference on.")] = None,
                as_json: JsonOpt = False) -> None:
    """Fold every train-time branch, write the folded state dict, and prove the outputs did not change."""
    from mobileclip_deploy.atomic import atomic_path
    from mobileclip_deploy.reparam import foldable_modules, reparameterize
    from mobileclip_deploy.tokenizer import tokenize
    from mobileclip_deploy.zeroshot import build_prompts, openai_templates

    replacing = _check_reparam_output(output, checkpoint)
    net, variant, _ = load_model_for_cli(model, checkpoint, random_weights)
    folded_kinds = Counter(type(m).__name__ for _, m in foldable_modules(net) if getattr(m, "reparam_conv", 1) is None)
    params_before = sum(p.numel() for p in net.parameters())
    folded = reparameterize(net)
    params_after = sum(p.numel() for p in folded.parameters())
    pixels, source = _sample_inputs(images, variant.image_size)
    tokens = tokenize([p for ps in build_prompts(["dog", "cat", "car"], openai_templates()[:2]) for p in ps])
    with torch.no_grad():
        diffs = {}
        for tower, fn, x in (("image", "encode_image", pixels), ("text", "encode_text", tokens)):
            a, b = getattr(net, fn)(x), getattr(folded, fn)(x)
            diffs[tower] = {"max_abs": (a - b).abs().max().item(),
                            "max_rel": ((a - b).abs().max() / a.abs().max()).item()}
    with atomic_path(output, replace=replacing) as tmp:
        _save_state_dict(folded.state_dict(), tmp)
    result = {"model": variant.name, "output": str(output), "replaced": replacing, "folded_blocks": dict(folded_kinds),
              "parameters_before": params_before, "parameters_after": params_after, "measured_on": source,
              "max_difference": diffs, "random_weights": random_weights, **upcast_field(net)}
    if as_json:
        print_json(result)
        return
    console.print(f"folded {sum(folded_kinds.values())} blocks: "
                  + ", ".join(f"{n} {k}" for k, n in sorted(folded_kinds.items())))
    console.print(f"parameters {params_before:,} -> {params_after:,}")
    for tower, d in diffs.items():
        console.print(f"{tower} encoder max difference: {d['max_abs']:.2e} abs, {d['max_rel']:.2e} relative "
                      f"({source if tower == 'image' else 'prompts'})")
    console.print(f"replaced {output}" if replacing else f"wrote {output}", soft_wrap=True)  # paths stay whole
    if random_weights:
        console.print(f"[bold yellow]{RANDOM_WARNING}[/]")


@app.command("classify")
def classify_cmd(images: Annotated[list[Path], typer.Argument(help="Image files, or folders of them.")],
                 model: ModelOpt, labels: Annotated[str, typer.Option(help="Comma-separated class names.")],
                 checkpoint: CheckpointOpt = None, random_weights: RandomWeightsOpt = False,
                 top_k: Annotated[int, typer.Option(min=1, help="Predictions shown per image (at most the "
                                                    "number of labels).")] = 5,
                 as_json: JsonOpt = False) -> None:
    """Zero-shot classification with the OpenAI prompt templates; prints a ranked table per image."""
    from mobileclip_deploy.preprocess import image_files, load_image, preprocess
    from mobileclip_deploy.reparam import reparameterize
    from mobileclip_deploy.zeroshot import class_text_embeddings, openai_templates, zero_shot_logits

    classes = [c.strip() for c in labels.split(",") if c.strip()]
    if not classes:
        raise UserError("--labels needs at least one class name, e.g. --labels 'cat,dog,car'.")
    images = [f for p in images for f in (image_files(p) if p.is_dir() else [p])]
    pixels = torch.stack([preprocess(load_image(p), model) for p in images])
    net, variant, _ = load_model_for_cli(model, checkpoint, random_weights)
    net = reparameterize(net)
    with torch.no_grad(), progress_bar() as bar:
        task = bar.add_task(f"encoding prompts for {len(classes)} labels", total=None)
        class_emb = class_text_embeddings(net.encode_text, classes, openai_templates(), batch_size=PROMPT_BATCH,
                                          progress=lambda done, total: bar.update(task, completed=done, total=total))
        probs = zero_shot_logits(net.encode_image(pixels), class_emb, net.logit_scale).softmax(-1)
    k = min(top_k, len(classes))
    if top_k > k:
        err_console.print(f"[yellow]note: --top-k {top_k} but only {k} labels: showing all {k}[/]")
    results = []
    for path, p in zip(images, probs):
        top = p.topk(k)
        results.append({"image": str(path), "predictions": [{"label": classes[i], "probability": round(v.item(), 6)}
                                                            for v, i in zip(top.values, top.indices)]})
    if as_json:
        print_json({"model": variant.name, "random_weights": random_weights, **upcast_field(net), "results": results})
        return
    if random_weights:
        console.print(f"[bold yellow]{RANDOM_WARNING}[/]")
    for r in results:
        table = Table(title=f"{r['image']} ({variant.name})")
        table.add_column("rank", justify="right")
        table.add_column("label")
        table.add_column("probability", justify="right")
        for i, pred in enumerate(r["predictions"], 1):
            table.add_row(str(i), pred["label"], f"{pred['probability']:.1%}")
        console.print(table)
