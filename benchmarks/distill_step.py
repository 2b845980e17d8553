#!/usr/bin/env python3
"""Distillation step time with stored teacher embeddings vs the same step with the teacher run online.

    python benchmarks/distill_step.py [--student mobileclip-s0] [--teacher openclip-vit-l-14] [--batch 32]
                                      [--threads 1,2] [--warmup-steps 2] [--stored-steps 2] [--online-steps 2]
                                      [--members 1,2] [--reinforce-images 2] [--json]

Both paths run the same `Trainer.train_step` (MobileCLIP loss, real + synthetic caption, AdamW) on the same
records (the sample photos written as DataCompDR-v1 shards, 2 stored augmentations each). The online path
also does what the stored embeddings save: replay each view at the teacher's 224 px and run the teacher's
image and text towers on it (no grad), as online KD must. Medians over the timed steps, after `--warmup-steps`
untimed steps of each path (a CPU Trainer keeps freed memory, training/memory.py; until its heap has grown to
the step's peak, steps page-fault). Weights are random (timing does not depend on them). `--members` is the
ensemble size the records store: 1 is the single ViT-L/14 of the issue's target, 2 what DataCompDR-12M stores (two ViT-L/14s,
OpenAI and DataComp), which online distillation would run both of.
Reinforce throughput: images/s of writing records (2 augmentations, teacher image + text forward, shard write)
beside the teacher's image forward cost per view. Target (issue 10): stored >= 5x faster per step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mobileclip_deploy import create_model, tokenize
from mobileclip_deploy.training import distributed
from mobileclip_deploy.training.augment import replay_augmentation, sample_augmentation
from mobileclip_deploy.training.batches import Batch, collate
from mobileclip_deploy.training.loop import DistillConfig, Trainer
from mobileclip_deploy.training.records import ShardWriter, encode_sample, open_reinforced, unit_slices

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reparam_latency import cpu_model  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-samples"
TARGET = 5.0
N_AUG = 2


@torch.no_grad()
def teacher_embed(teacher: torch.nn.Module, images: list, params: list, captions: list[str]) -> tuple:
    """One teacher's unit-norm image embedding per (image, view) and text embedding per caption, as reinforce."""
    size = teacher.variant.image_size
    views = torch.stack([replay_augmentation(im, p, size) for im, p in zip(images, params)]).float() / 255
    image = F.normalize(teacher.encode_image(views), dim=-1)
    text = F.normalize(teacher.encode_text(tokenize(captions, teacher.variant.context_length)), dim=-1)
    return image, text


def write_records(folder: Path, photos: list[Path], teacher: torch.nn.Module, online: bool, members: int) -> float:
    """DataCompDR-v1 shards of the photos; with a teacher, its embeddings (timed: reinforce's work per image)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    dims = [teacher.variant.embed_dim] * members
    names = [f"a photo of a {p.stem.split('_', 1)[1].replace('_', ' ')}" for p in photos]
    writer = ShardWriter(folder / "00000000.tar")
    start = time.perf_counter()
    for k, path in enumerate(photos):
        image = Image.open(path).convert("RGB")
        params = [sample_augmentation(rng, image.width, image.height) for _ in range(N_AUG)]
        captions = [names[k], names[(k + 1) % len(names)], names[(k + 2) % len(names)]]
        if online:  # one teacher computed, stored per member: the ensemble's cost is per member
            image_emb, text_emb = (np.concatenate([e.numpy()] * members, axis=1)
                                   for e in teacher_embed(teacher, [image] * N_AUG, params, captions))
        else:
            image_emb = unit_slices(rng.standard_normal((N_AUG, sum(dims))), dims)
            text_emb = unit_slices(rng.standard_normal((3, sum(dims))), dims)
        writer.write(encode_sample(f"img{k:05d}", path.read_bytes(), "jpg", params, image_emb, text_emb,
                                   captions[:1], captions[1:]))
    writer.close()
    return time.perf_counter() - start


class OnlineTrainer(Trainer):
    """The same step, with the teacher's embeddings computed from the stored views instead of read."""

    teacher: torch.nn.Module
    members: int

    def batch(self, micro_step: int) -> Batch:
        stored = super().batch(micro_step)
        # Replay again at the teacher's resolution (the student's views are 256 px), exactly the stored views.
        pos = self.positions_of(micro_step)
        chosen = [self.samples[self.train_idx[i]] for _, i in pos]
        t = self.teacher.variant
        views = collate(chosen, [e for e, _ in pos], self.cfg.seed, t.image_size, t.context_length,
                        list(stored.tokens))
        with torch.no_grad():  # every member costs one forward: the (random-weight) teacher runs once per member
            images = [F.normalize(self.teacher.encode_image(views.images), dim=-1) for _ in range(self.members)]
            texts = {k: [F.normalize(self.teacher.encode_text(v), dim=-1) for _ in range(self.members)]
                     for k, v in views.tokens.items()}
        stored.teacher_image = torch.cat(images, dim=1)
        stored.teacher_text = {k: torch.cat(v, dim=1) for k, v in texts.items()}
        return stored

    def positions_of(self, micro_step: int) -> list[tuple[int, int]]:
        from mobileclip_deploy.training.loop import positions

        return positions(micro_step, self.cfg.batch_size, 0, self.cfg.batch_size, len(self.train_idx), self.cfg.seed)


def time_steps(trainer: Trainer, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="mobileclip-s0")
    parser.add_argument("--teacher", default="openclip-vit-l-14")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--warmup-steps", type=int, default=2,
                        help="untimed steps per path (the first two still page-fault the allocator's memory in)")
    parser.add_argument("--stored-steps", type=int, default=2)
    parser.add_argument("--online-steps", type=int, default=2)
    parser.add_argument("--members", default="1,2", help="ensemble sizes (comma list)")
    parser.add_argument("--reinforce-images", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    photos = sorted(PHOTOS.glob("*.JPEG"))[: args.batch]
    teacher = create_model(args.teacher)
    env = distributed.DistEnv(0, 0, 1, torch.device("cpu"))
    results: dict = {"cpu": cpu_model(), "torch": torch.__version__, "student": args.student,
                     "teacher": args.teacher, "batch": args.batch, "views_per_image": N_AUG, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for members in map(int, args.members.split(",")):
            folder = Path(tmp) / f"members{members}"  # ShardWriter makes it
            write_records(folder, photos, teacher, online=False, members=members)
            data = open_reinforced(folder, [f"{args.teacher}-{k}" for k in range(members)])
            for threads in map(int, args.threads.split(",")):
                torch.set_num_threads(threads)
                cfg = DistillConfig(student=args.student, data=str(folder), out=str(folder / "run"), steps=100,
                                    batch_size=args.batch, lr=1e-4)
                stored = Trainer(cfg, data, create_model(args.student), env)
                time_steps(stored, args.warmup_steps)
                stored_s = time_steps(stored, args.stored_steps)
                # Its own config: a Trainer fills in the defaults of the one it is given.
                online = OnlineTrainer(dataclasses.replace(cfg), data, create_model(args.student), env)
                online.teacher, online.members = teacher, members
                time_steps(online, args.warmup_steps)  # a fresh student's first steps (and the teacher's) cost more
                online_s = time_steps(online, args.online_steps)
                row = {"members": members, "threads": threads, "stored_step_s": statistics.median(stored_s),
                       "online_step_s": statistics.median(online_s), "stored_all_s": stored_s,
                       "online_all_s": online_s}
                row["ratio"] = row["online_step_s"] / row["stored_step_s"]
                results["runs"].append(row)
                print(f"{members} teacher(s), threads {threads}: stored {row['stored_step_s']:.2f} s/step, online "
                      f"{row['online_step_s']:.2f} s/step, online/stored {row['ratio']:.1f}x (target >= {TARGET}x)",
                      file=sys.stderr)
        torch.set_num_threads(1)
        seconds = write_records(Path(tmp) / "reinforce", photos[: args.reinforce_images], teacher, online=True,
                                members=1)
        views = args.reinforce_images * N_AUG
        with torch.no_grad():
            x = torch.rand(1, 3, teacher.variant.image_size, teacher.variant.image_size)
            teacher.encode_image(x)
            t0 = time.perf_counter()
            teacher.encode_image(x)
            view_s = time.perf_counter() - t0
    results["reinforce"] = {"threads": 1, "images": args.reinforce_images, "images_per_s": args.reinforce_images
                            / seconds, "teacher_image_forward_s_per_view": view_s,
                            "teacher_forward_share": views * view_s / seconds}
    results["target_met"] = {m: all(r["ratio"] >= TARGET for r in results["runs"] if r["members"] == m)
                             for m in sorted({r["members"] for r in results["runs"]})}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.student} student, {args.teacher} teacher, batch {args.batch}, CPU {results['cpu']}")
    print(f"{'teachers':>8} {'threads':>7} {'stored s/step':>14} {'online s/step':>14} {'online/stored':>14}")
    for r in results["runs"]:
        print(f"{r['members']:>8} {r['threads']:>7} {r['stored_step_s']:>14.2f} {r['online_step_s']:>14.2f} "
              f"{r['ratio']:>13.1f}x")
    rf = results["reinforce"]
    print(f"reinforce (1 thread, {N_AUG} views/image, 1 teacher): {rf['images_per_s']:.3f} images/s; teacher "
          f"image forward {rf['teacher_image_forward_s_per_view']:.2f} s/view "
          f"({rf['teacher_forward_share']:.0%} of the time)")
    for members, met in results["target_met"].items():
        print(f"target (stored >= {TARGET}x faster per step), {members} {args.teacher} teacher(s): "
              f"{'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
