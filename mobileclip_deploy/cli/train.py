"""`reinforce` and `distill`: make a small MobileCLIP for your own photos from larger teachers."""

from __future__ import annotations

from pathlib import Path

import typer

from mobileclip_deploy.cli.app import app, console, print_json


@app.command("reinforce")
def reinforce_command(
    images: Path = typer.Option(..., "--images", help="Folder of your photos (jpg, png, webp; "
                                "searched recursively), or webdataset shards (.tar, or a folder of them; their "
                                "txt members become the captions)."),
    teacher: list[str] = typer.Option(..., "--teacher", help="NAME=CHECKPOINT, repeatable: any registry model "
                                      "(openclip-vit-l-14[-quickgelu], openclip-vit-b-16[-quickgelu] for open_clip "
                                      "checkpoints; mobileclip2-l-14, mobileclip-b, ...). Stored in the order given."),
    out: Path = typer.Option(..., "--out", "-o", help="New folder for the dataset (or an unfinished one to resume)."),
    augmentations: int = typer.Option(5, "--augmentations", "-k", help="Stored augmentations per photo "
                                      "(DataCompDR: 30; the paper saturates at about 5)."),
    captions: Path | None = typer.Option(None, "--captions", help="Ground-truth captions: CSV (file,caption) or "
                                         "JSONL ({\"file\", \"caption\"}), one per photo."),
    synthetic_captions: Path | None = typer.Option(None, "--synthetic-captions", help="JSONL ({\"file\", "
                                                   "\"captions\": [...]}) from any captioner (captioning itself is "
                                                   "not part of this tool)."),
    sentences: Path | None = typer.Option(None, "--sentences", help="Sentence bank for unpaired (DIME-FM) "
                                          "distillation, one per line; embedded once."),
    teacher_scale: list[float] | None = typer.Option(None, "--teacher-scale", help="Fixed logit scale per teacher, "
                                                     "in --teacher order (default 100 each; DFN teachers: 70, 60)."),
    shard_size: int = typer.Option(1000, "--shard-size", help="Photos per shard (the unit of resume and of work "
                                   "per torchrun rank)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the augmentation draws."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Run the teachers once over your photos and store a reinforced dataset (DataCompDR layout) for `distill`.

    Resumable: repeat the command to finish an interrupted run. Several processes: `torchrun --nproc-per-node N
    -m mobileclip_deploy reinforce ...` (shards split by rank).
    """
    from mobileclip_deploy.errors import UserError
    from mobileclip_deploy.training.reinforce import ReinforceConfig, load_teacher, read_inputs, reinforce

    scales = list(teacher_scale or [])
    if scales and len(scales) != len(teacher):
        raise UserError(f"--teacher-scale is given {len(scales)} time(s) for {len(teacher)} teacher(s); give one per "
                        "teacher or none.")
    cfg = ReinforceConfig(images, out, augmentations, captions, synthetic_captions, sentences, shard_size, seed)
    read_inputs(cfg)  # bad photos / caption / sentence files fail before minutes of teacher loading
    teachers = [load_teacher(spec, scales[i] if scales else None) for i, spec in enumerate(teacher)]
    manifest = reinforce(cfg, teachers, device, console=None if as_json else console)
    if "counts" not in manifest:  # not the main rank
        return
    if as_json:
        print_json(manifest)
        return
    counts = manifest["counts"]
    console.print(f"{counts['samples']} photos x {augmentations} augmentations in {counts['shards']} shard(s), "
                  f"{counts['captions']} captions, {counts['synthetic']} synthetic, {counts['sentences']} sentences "
                  f"-> {out}")
    console.print(f"next: mobileclip-deploy distill --student mobileclip-s0 --data {out} --steps 1000 -o run")


@app.command("distill")
def distill_command(
    student: str = typer.Option(..., "--student", help="Registry name of the student, e.g. mobileclip-s0."),
    data: Path = typer.Option(..., "--data", help="Reinforced dataset: a `reinforce` output or DataCompDR shards."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: student.pt, state.pt, log.jsonl, curve.png."),
    steps: int = typer.Option(..., "--steps", help="Optimizer steps."),
    batch_size: int = typer.Option(32, "--batch-size", help="Samples per process and step (global = x processes)."),
    init: Path | None = typer.Option(None, "--init", help="Start from this student checkpoint (default: random)."),
    loss: str | None = typer.Option(None, "--loss", help="mobileclip or dime-fm; default: mobileclip when the "
                                                         "records carry captions, dime-fm for images + sentences."),
    teacher: list[str] | None = typer.Option(None, "--teacher", help="Teacher names the data must have been made "
                                                                     "with, in order (checked, default: the data's)."),
    teacher_scale: list[float] | None = typer.Option(None, "--teacher-scale", help="Fixed logit scale per teacher "
                                                     "(default: the data's, 100 for DataCompDR's ViT-L/14s)."),
    dime_vl: str = typer.Option("both", "--dime-vl", help="DIME-FM's VL term: image (the released code: the "
                                "student's image tower against the teacher's sentence embeddings; the text tower is "
                                "left as initialised and summary agreement uses the teacher's text) or both (the "
                                "student's own text tower is trained on the sentences too)."),
    distill_weight: float = typer.Option(1.0, "--lambda", help="Weight of distillation vs CLIP loss (MobileCLIP)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 1e-3 * sqrt(batch / 8192))."),
    weight_decay: float | None = typer.Option(None, "--weight-decay", help="Default 0.2 (mobileclip), 0.05 (dime)."),
    warmup: int | None = typer.Option(None, "--warmup", help="Warm-up steps (default min(1000, steps / 10))."),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="Gradient norm clip."),
    accum: int = typer.Option(1, "--accum", help="Micro-batches per step (each its own similarity matrix)."),
    save_every: int = typer.Option(100, "--save-every", help="Checkpoint every N steps (and at the end)."),
    holdout: float = typer.Option(0.0, "--holdout", help="Fraction of images kept out of training for the "
                                                         "agreement check (0: measure on the training images)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample order and augmentation choice."),
    syn_text_key: str = typer.Option(r"^syn_text.*$", "--syn-text-key", help="Regular expression over the "
                                     "syn.json keys (re.match): each sample draws one matching key, then one of its "
                                     "captions, as the released trainer's --dataset-reinforcement-syn-text-key-regex "
                                     "(e.g. ^syn_text_dfn_mscoco38k$ for DFNDR's fine-tuned captioner)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="Mixed precision on GPUs (bf16, else fp16)."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    eval_data: Path | None = typer.Option(None, "--eval-data", help="Labelled image folder (one sub-folder per "
                                                                    "class): report the student's zero-shot top-1."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Distil the teachers stored in a reinforced dataset into a student; run with `torchrun` for DDP."""
    from mobileclip_deploy.training.loop import DistillConfig, distill

    cfg = DistillConfig(student=student, data=str(data), out=str(out), steps=steps, batch_size=batch_size,
                        loss=loss, init=str(init) if init else None, teachers=teacher or None,
                        teacher_scales=teacher_scale or None, distill_weight=distill_weight, lr=lr,
                        weight_decay=weight_decay, warmup=warmup, grad_clip=grad_clip, accum=accum,
                        save_every=save_every, seed=seed, holdout=holdout, amp=amp, device=device,
                        syn_text_key=syn_text_key, dime_vl=dime_vl)
    summary = distill(cfg, resume=resume, console=None if as_json else console)
    if "agreement" not in summary:  # not the main rank
        return
    if as_json:
        print_json(summary)
        return
    final, agree = summary["final"] or {}, summary["agreement"]
    console.print(f"{summary['variant']} distilled with the {summary['loss']} loss for {summary['steps']} steps "
                  f"(global batch {summary['global_batch']}, final loss {final.get('loss', float('nan')):.4f}).")
    if "zero_shot_top1_agreement" in agree:
        console.print(f"zero-shot top-1 agreement with the teachers on {agree['images']} {summary['agreement_on']}:"
                      f" {agree['zero_shot_top1_agreement']:.1%} ({agree['zero_shot_classes']} classes, chance "
                      f"{agree['zero_shot_chance']:.1%})")
    if "retrieval_agreement" in agree:
        console.print(f"image-to-text retrieval agreement: {agree['retrieval_agreement']:.1%} "
                      f"(chance {agree['retrieval_chance']:.1%})")
    if eval_data is not None:
        result = _evaluate(summary, eval_data)
        console.print(f"eval on {eval_data}: zero-shot top-1 {result.top1:.1%} over {result.images} images")
    console.print(f"student: {summary['student']}\nnext:\n  " + "\n  ".join(summary["next"]))


def _evaluate(summary: dict, folder: Path):
    """The `eval` command's zero-shot accuracy of the folded student on a labelled folder."""
    from mobileclip_deploy import create_model, reparameterize
    from mobileclip_deploy.bench.evaluate import evaluate, torch_encoders
    from mobileclip_deploy.registry import get_variant

    variant = get_variant(summary["variant"])
    image_fn, text_fn = torch_encoders(reparameterize(create_model(variant.name, summary["student"])))
    return evaluate(image_fn, text_fn, folder, variant.image_size, variant.interpolation, "simple", "present",
                    None, None, 32, None)
