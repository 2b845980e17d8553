#!/usr/bin/env python3
"""Which DIME-FM VL form to default to: teacher agreement after a small run with each (`--dime-vl`).

    python benchmarks/dime_vl.py [--photos 32] [--steps 150] [--seeds 0,1,2] [--holdout 0.25] [--json]

Both forms train the same tiny student (a 2-block ViT + text transformer, 16-D, the one of tests/distill_fakes.py)
on the same toy records: sample photos with 2 stored augmentations each, a fixed 16-D toy teacher that embeds the
stored view it saw, and a sentence bank of one sentence per photo's class (unit vectors). `image` is the released
code (the student's image tower against the teacher's sentence embeddings; the text tower stays as initialised),
`both` trains the student's text tower on the sentences too. Agreement = zero-shot top-1 over the sentence bank on
held-out photos (`--holdout 0`: the training photos, as `distill`), measured twice: with the student's own text
tower (what `distill` exports and deploys) and with the teacher's stored sentence embeddings (how the released
DIME-FM student is used). 1 thread, CPU. Measured: benchmarks/results/dime_vl.txt (`--photos 16 --steps 300
--seeds 0,1,2 --holdout 0`, about 2.5 min).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from distill_fakes import make_data, tiny_student  # noqa: E402

from mobileclip_deploy.training import distributed  # noqa: E402
from mobileclip_deploy.training.agreement import agreement  # noqa: E402
from mobileclip_deploy.training.loop import DistillConfig, Trainer  # noqa: E402

PHOTOS = Path(os.environ.get("MOBILECLIP_SHARED", ROOT.parent / "shared")) / "data" / "imagenet-samples"


def run(form: str, seed: int, data, args) -> dict:
    cfg = DistillConfig(student="tiny-vit", data="toy", out=tempfile.mkdtemp(), steps=args.steps, batch_size=8,
                        lr=2e-3, save_every=10**9, seed=seed, holdout=args.holdout, dime_vl=form)
    trainer = Trainer(cfg, data, tiny_student(seed), distributed.DistEnv(0, 0, 1, torch.device("cpu")))
    start = time.perf_counter()
    log = trainer.run()
    held = [trainer.samples[i] for i in trainer.held_idx or trainer.train_idx]  # as distill: no holdout, train
    out = {"form": form, "seed": seed, "seconds": time.perf_counter() - start, "final_loss": log[-1]["loss"],
           "held_out": len(held)}
    for tower in ("student", "teacher"):
        got = agreement(trainer.student, held, data, [100.0], torch.device("cpu"), teacher_text=tower == "teacher")
        out[f"agreement_{tower}_text"] = got["zero_shot_top1_agreement"]
        out["chance"] = got["zero_shot_chance"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--holdout", type=float, default=0.25)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = make_data(PHOTOS, n=args.photos, dims=(16,), captions=False, synthetic=False)
    rows = [run(form, int(seed), data, args) for seed in args.seeds.split(",") for form in ("image", "both")]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{args.photos} photos, {args.steps} steps at batch 8, held out {rows[0]['held_out']}, "
          f"chance {rows[0]['chance']:.1%}")
    print("form   seed  loss    agree(student text)  agree(teacher text)  s")
    for r in rows:
        print(f"{r['form']:<6} {r['seed']:>4}  {r['final_loss']:.4f}  {r['agreement_student_text']:>18.1%}  "
              f"{r['agreement_teacher_text']:>19.1%}  {r['seconds']:.1f}")
    for form in ("image", "both"):
        mine = [r for r in rows if r["form"] == form]
        print(f"mean {form:<6}        {statistics.mean(r['agreement_student_text'] for r in mine):>18.1%}  "
              f"{statistics.mean(r['agreement_teacher_text'] for r in mine):>19.1%}")


if __name__ == "__main__":
    main()
