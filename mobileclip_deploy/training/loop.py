"""The distillation loop: AdamW + warm-up/cosine, clipping, AMP, accumulation, DDP, atomic checkpoints, resume.

Determinism is by construction: micro-batch m of the run holds the samples at positions [m*G, (m+1)*G) of an
endless sequence of per-epoch permutations seeded by (seed, epoch), each rank taking its own contiguous slice
(G = per-rank batch x ranks). So a resumed run and an N-rank run see exactly the batches of an uninterrupted
1-rank run with the same global batch; the model and optimizer state are the only other state.
The records are read once and held in memory (photo folders of up to tens of thousands of images; streaming
the 12M DataCompDR shards is not implemented).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mobileclip_deploy.atomic import atomic_path, write_text
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.training import distributed
from mobileclip_deploy.training.batches import Batch, collate
from mobileclip_deploy.training.depthwise import use_fast_depthwise
from mobileclip_deploy.training.losses import DIME_VL_FORMS, DimeFMLoss, MobileCLIPLoss
from mobileclip_deploy.training.memory import keep_freed_memory
from mobileclip_deploy.training.records import DEFAULT_SYN_TEXT_KEY
from mobileclip_deploy.training.repmixer import share_repmixer_statistics

MAX_LOGIT_SCALE = math.log(100.0)
REFERENCE_BATCH, REFERENCE_LR = 8192, 1e-3  # MobileCLIP's DataCompDR-12M recipe (training.md 2.3)
# Fields that fix which batches and schedule a run has: a resume must not change them.
RUN_IDENTITY = ("student", "loss", "steps", "batch_size", "world_size", "accum", "seed", "lr", "warmup",
                "distill_weight", "teacher_scales", "holdout", "syn_text_key", "dime_vl")


@dataclass
class DistillConfig:
    student: str
    data: str
    out: str
    steps: int
    batch_size: int  # per rank
    loss: str | None = None  # "mobileclip" | "dime-fm"; None: follow the data
    init: str | None = None
    teachers: list[str] | None = None
    teacher_scales: list[float] | None = None  # default: the data's (100 per member for DataCompDR)
    distill_weight: float = 1.0  # lambda
    lr: float | None = None  # default: REFERENCE_LR * sqrt(global batch / REFERENCE_BATCH)
    weight_decay: float | None = None
    warmup: int | None = None  # default: min(1000, steps // 10)
    grad_clip: float = 1.0
    accum: int = 1
    save_every: int = 100
    seed: int = 0
    holdout: float = 0.0
    amp: bool = True
    device: str | None = None
    dime_weights: tuple[float, float, float] = (0.7, 0.3, 0.0)
    dime_temperatures: tuple[float, float, float] = (1.0, 3.0, 7.0)
    dime_vl: str = "both"  # "image": the released code (image tower only); "both": the student's text tower too
    world_size: int = 1  # filled in from the process group
    syn_text_key: str = DEFAULT_SYN_TEXT_KEY  # regex over syn.json keys (the released trainer's default)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's rule: no decay on 1-D tensors (norms, biases, logit_scale) and embedding tables."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "bias" in name or "logit_scale" in name or name.endswith(
            ("positional_embedding", "pos_embed", "cls_token", "token_embedding.weight"))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up from base/warmup to base, then cosine to 0 at `total` (open_clip's `cosine_lr`)."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress)) * base


def default_lr(global_batch: int) -> float:
    """sqrt scaling from the reference recipe: linear scaling would leave a 32-photo batch at 4e-6."""
    return REFERENCE_LR * math.sqrt(global_batch / REFERENCE_BATCH)


def positions(micro_step: int, global_batch: int, rank: int, local_batch: int, n: int, seed: int,
              salt: int = 0) -> list[tuple[int, int]]:
    """(epoch, index) of this rank's samples in micro-batch `micro_step` of the endless permuted sequence."""
    out, cache = [], {}
    start = micro_step * global_batch + rank * local_batch
    for pos in range(start, start + local_batch):
        epoch = pos // n
        if epoch not in cache:
            cache[epoch] = np.random.default_rng([seed, salt, epoch]).permutation(n)
        out.append((epoch, int(cache[epoch][pos % n])))
    return out


def autocast_for(device: torch.device, enabled: bool) -> tuple[Callable, torch.amp.GradScaler | None]:
    """bf16 autocast where the GPU supports it, fp16 + loss scaling otherwise; CPU trains in fp32."""
    if not enabled or device.type != "cuda":
        return nullcontext, None
    if torch.cuda.is_bf16_supported():
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)), None
    return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")


class Objective:
    """Turns a local batch into the loss dict, for either loss; runs the student through `forward`."""

    def __init__(self, kind: str, teacher_dims: list[int], teacher_scales: list[float], cfg: DistillConfig):
        self.kind = kind
        if kind == "mobileclip":
            self.loss = MobileCLIPLoss(teacher_dims, teacher_scales, cfg.distill_weight)
        else:
            self.loss = DimeFMLoss(teacher_dims, teacher_scales, cfg.dime_weights, cfg.dime_temperatures,
                                   vl=cfg.dime_vl)

    def __call__(self, forward: nn.Module, student: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        if self.kind == "dime-fm":  # the image tower alone in the released form, else the sentences too
            image, text = forward(batch.images, batch.tokens["sentences"] if self.loss.vl == "both" else None)
            return self.loss(F.normalize(image, dim=-1), batch.teacher_image, batch.teacher_text["sentences"],
                             F.normalize(text, dim=-1) if text is not None else None)
        sets = list(batch.tokens)
        tokens = torch.cat([batch.tokens[k] for k in sets])
        image, text = forward(batch.images, tokens)
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        return self.loss(image, text.split(batch.images.shape[0]), batch.teacher_image,
                         [batch.teacher_text[k] for k in sets], student.logit_scale.exp())


class Trainer:
    """Holds the run; `run()` trains to `steps` from wherever the run folder left off."""

    def __init__(self, cfg: DistillConfig, data, student: nn.Module, env: distributed.DistEnv,
                 resume: bool = False, console=None):
        self.cfg, self.data, self.env, self.console = cfg, data, env, console
        self.out = Path(cfg.out)
        self.variant = student.variant
        self.kind = choose_loss(cfg.loss, data)
        cfg.loss, cfg.world_size = self.kind, env.world_size
        self.samples = list(data.samples())
        self.train_idx, self.held_idx = split_holdout(self.samples, cfg.holdout, cfg.seed)
        global_batch = cfg.batch_size * env.world_size
        check_inputs(cfg, data, self.variant, len(self.train_idx), global_batch, self.kind)
        dims = [t.dim for t in data.teachers]
        scales = cfg.teacher_scales or [float(t.logit_scale) for t in data.teachers]
        if len(scales) != len(dims):
            raise UserError(f"--teacher-scale was given {len(scales)} times but the data has {len(dims)} teachers "
                            f"({', '.join(t.name for t in data.teachers)}).")
        cfg.teacher_scales = scales
        cfg.lr = cfg.lr if cfg.lr is not None else default_lr(global_batch * cfg.accum)
        cfg.warmup = cfg.warmup if cfg.warmup is not None else min(1000, cfg.steps // 10)
        if cfg.weight_decay is None:
            cfg.weight_decay = 0.2 if self.kind == "mobileclip" else 0.05
        self.objective = Objective(self.kind, dims, scales, cfg)
        if env.device.type == "cpu":  # otherwise every step re-faults its activations (training/memory.py)
            keep_freed_memory()
            use_fast_depthwise(student)  # 7x7 weight gradients, 1x1 as multiplies (training/depthwise.py)
            share_repmixer_statistics(student)  # one BatchNorm pass for two; measured on CPU only (repmixer.py)
        self.student = student.to(env.device).train()
        if self.kind == "dime-fm":  # DIME-FM's logits use a fixed scale of 100 (section 3.2)
            self.student.logit_scale.requires_grad_(False)
            if cfg.dime_vl == "image":  # the released form: the text tower stays as initialised
                self.student.text.requires_grad_(False)
        self.forward: nn.Module = self.student
        if env.world_size > 1:
            if env.device.type == "cuda":  # per-rank BatchNorm statistics would differ from the global batch's
                self.student = nn.SyncBatchNorm.convert_sync_batchnorm(self.student)
            self.forward = nn.parallel.DistributedDataParallel(
                self.student, device_ids=[env.device.index] if env.device.type == "cuda" else None)
        betas, eps = ((0.9, 0.95), 1e-6) if self.kind == "mobileclip" else ((0.9, 0.999), 1e-8)
        # fused: one kernel over all tensors (on CPU 0.07 s instead of 0.4-0.5 s per S0 step, same update)
        self.optimizer = torch.optim.AdamW(param_groups(self.student, cfg.weight_decay), lr=cfg.lr, betas=betas,
                                           eps=eps, fused=env.device.type in ("cpu", "cuda"))
        self.autocast, self.scaler = autocast_for(env.device, cfg.amp)
        self.step = 0
        self.history: list[dict] = []
        if resume:
            self._resume()

    # -- batches -------------------------------------------------------------------------------------------
    def batch(self, micro_step: int, samples_idx: list[int] | None = None) -> Batch:
        cfg, env = self.cfg, self.env
        idx = self.train_idx
        pos = positions(micro_step, cfg.batch_size * env.world_size, env.rank, cfg.batch_size, len(idx), cfg.seed)
        chosen = [self.samples[idx[i]] for _, i in pos]
        sets = [k for k, on in (("real", self.data.has_captions), ("synthetic", self.data.has_synthetic)) if on]
        batch = collate(chosen, [e for e, _ in pos], cfg.seed, self.variant.image_size, self.variant.context_length,
                        sets if self.kind == "mobileclip" else ())
        if self.kind == "dime-fm":  # an independent, equally large stream of unpaired sentences
            bank = self.data.sentences
            spos = positions(micro_step, cfg.batch_size * env.world_size, env.rank, cfg.batch_size, len(bank),
                             cfg.seed, salt=1)
            from mobileclip_deploy.tokenizer import tokenize

            batch.tokens["sentences"] = tokenize([bank[i] for _, i in spos], self.variant.context_length)
            batch.teacher_text["sentences"] = torch.from_numpy(
                np.ascontiguousarray(self.data.sentence_emb[[i for _, i in spos]], dtype=np.float32))
        return batch.to(env.device)

    # -- one optimizer step --------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        lr = lr_at(self.step, cfg.lr, cfg.warmup, cfg.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for k in range(cfg.accum):
            batch = self.batch(self.step * cfg.accum + k)
            last = k == cfg.accum - 1
            sync = self.forward.no_sync() if (not last and self.forward is not self.student) else nullcontext()
            with sync, self.autocast():
                losses = self.objective(self.forward, self.student, batch)
            loss = losses["loss"] / cfg.accum
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(distributed.mean_over_ranks(value)) / cfg.accum
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg.grad_clip))
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        with torch.no_grad():
            self.student.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        self.step += 1
        return {**totals, "lr": lr, "grad_norm": grad_norm, "scale": float(self.student.logit_scale.detach().exp())}

    # -- checkpoints ---------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out / "state.pt"

    @property
    def student_path(self) -> Path:
        return self.out / "student.pt"

    def save(self) -> None:
        """Training state (weights, optimizer, step) and the bare student, each written atomically."""
        if not self.env.is_main:
            return
        identity = {k: getattr(self.cfg, k) for k in RUN_IDENTITY}
        state = {"step": self.step, "model": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler else {}, "identity": json.dumps(identity)}
        with atomic_path(self.state_path, replace=True) as tmp:
            torch.save(state, tmp)
        # The student alone, in its native (official or open_clip) layout, train-time form: create_model loads it.
        with atomic_path(self.student_path, replace=True) as tmp:
            torch.save(self.student.state_dict(), tmp)
        write_text(self.out / "log.jsonl", "".join(json.dumps(h) + "\n" for h in self.history), replace=True)
        plot_curve(self.history, self.out / "curve.png")

    def _resume(self) -> None:
        if not self.state_path.is_file():
            raise UserError(f"--resume: {self.state_path} does not exist; nothing to resume.")
        state = torch.load(self.state_path, map_location=self.env.device, weights_only=True)
        saved = json.loads(state["identity"])
        changed = [f"{k} ({saved.get(k)} -> {getattr(self.cfg, k)})" for k in RUN_IDENTITY
                   if json.dumps(saved.get(k)) != json.dumps(getattr(self.cfg, k))]
        if changed:
            raise UserError(f"--resume: {self.out} was started with other settings: {', '.join(changed)}. "
                            "Resume with the same options, or start a new run folder.")
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        log = self.out / "log.jsonl"
        lines = log.read_text().splitlines() if log.is_file() else []
        self.history = [h for h in map(json.loads, lines) if h["step"] <= self.step]

    # -- the run -------------------------------------------------------------------------------------------
    def run(self, progress: Iterator | None = None, on_step: Callable[[dict], None] | None = None) -> list[dict]:
        cfg = self.cfg
        start = time.perf_counter()
        done_at_start = self.step
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            record = self.train_step()
            seconds = time.perf_counter() - t0
            record = {"step": self.step, **record, "seconds": seconds,
                      "images_per_s": cfg.batch_size * self.env.world_size * cfg.accum / seconds}
            self.history.append(record)
            if on_step:
                on_step(record)
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self.save()
        distributed.barrier()
        self.elapsed = time.perf_counter() - start
        self.steps_run = self.step - done_at_start
        return self.history


def choose_loss(asked: str | None, data) -> str:
    """The loss follows the data unless asked: captions -> mobileclip; only images + sentence bank -> dime-fm."""
    has_text = data.has_captions or data.has_synthetic
    has_bank = data.sentences is not None and len(data.sentences) > 0
    if asked is None:
        if has_text:
            return "mobileclip"
        if has_bank:
            return "dime-fm"
        raise UserError("the records carry no captions and no sentence bank, so there is no text to distil: "
                        "reinforce with --captions/--synthetic-captions or --sentences.")
    if asked == "mobileclip" and not has_text:
        raise UserError("--loss mobileclip needs captions, but the records carry none (they are image-only); "
                        "use --loss dime-fm with a sentence bank.")
    if asked == "dime-fm" and not has_bank:
        raise UserError("--loss dime-fm needs a sentence bank, but the data has none: reinforce with --sentences.")
    if asked not in ("mobileclip", "dime-fm"):
        raise UserError(f"unknown --loss {asked!r}: use mobileclip or dime-fm.")
    return asked


def check_inputs(cfg: DistillConfig, data, variant, n_train: int, global_batch: int, kind: str) -> None:
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.accum < 1:
        raise UserError("--steps, --batch-size and --accum must be at least 1.")
    if global_batch > n_train:
        where = f" ({cfg.batch_size} per process x {global_batch // cfg.batch_size} processes)" \
            if global_batch != cfg.batch_size else ""
        raise UserError(f"the batch ({global_batch} samples{where}) is larger than the training data "
                        f"({n_train} samples in {cfg.data}); use --batch-size {max(1, n_train)} or fewer.")
    if kind == "dime-fm" and global_batch > len(data.sentences):
        raise UserError(f"the batch ({global_batch}) is larger than the sentence bank ({len(data.sentences)} "
                        "sentences); DIME-FM pairs each batch of images with as many sentences.")
    if kind == "dime-fm" and cfg.dime_vl not in DIME_VL_FORMS:
        raise UserError(f"unknown --dime-vl {cfg.dime_vl!r}: use image (the released code: image tower only) or "
                        "both (the student's text tower too).")
    if kind == "dime-fm" and any(t.dim != variant.embed_dim for t in data.teachers):
        raise UserError(f"DIME-FM compares the student's image embeddings with the teacher's (PVL uses the "
                        f"teacher's image embeddings as pseudo-texts), so the student must embed in the teachers' "
                        f"space: {variant.name} is {variant.embed_dim}-D, the teachers "
                        f"({', '.join(t.name for t in data.teachers)}) are "
                        f"{', '.join(str(t.dim) for t in data.teachers)}-D. Reinforce with teachers of the student's "
                        "width (openclip-vit-b-16 for 512-D students) or use --loss mobileclip.")
    if data.context_length != variant.context_length:
        raise UserError(f"the student {variant.name} tokenizes to {variant.context_length} tokens but the data "
                        f"was made with a {data.context_length}-token context; its teacher text embeddings are of "
                        "captions cut differently. Reinforce again for this student's context.")


def split_holdout(samples: list, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A fixed, uid-keyed held-out set (the same on every rank and after a resume)."""
    from mobileclip_deploy.training.batches import pick

    if not 0 <= fraction < 1:
        raise UserError(f"--holdout must be in [0, 1), got {fraction}.")
    held = {i for i, s in enumerate(samples) if pick(seed, 0, s.uid, "holdout", 10_000) < fraction * 10_000}
    return [i for i in range(len(samples)) if i not in held], sorted(held)


def plot_curve(history: list[dict], path: Path) -> None:
    """Loss (and its terms) against step, written atomically."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [h["step"] for h in history]
    for key in ("loss", "distill", "contrastive", "vl", "pvl", "udist"):
        if key in history[0]:
            ax.plot(steps, [h[key] for h in history], label=key, lw=1.2 if key == "loss" else 0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, replace=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


@contextmanager
def run_folder_lock(out: Path) -> Iterator[None]:
    """One run per folder: a second `distill -o` on the same folder fails instead of interleaving checkpoints."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another distill run is using {out}.") from None
        yield


def distill(cfg: DistillConfig, resume: bool = False, console=None, student: nn.Module | None = None,
            data=None) -> dict:
    """Open the records, train, measure agreement and write `summary.json`; returns the summary.

    `student` and `data` replace `create_model(cfg.student, cfg.init)` and `open_reinforced(cfg.data)` (tests
    pass tiny configurations and hand-made records).
    """
    from mobileclip_deploy.training.agreement import agreement

    out = Path(cfg.out)
    if not resume and (out / "state.pt").exists():
        raise UserError(f"{out} already holds a run (state.pt); pass --resume to continue it, or another -o.")
    if data is None:
        from mobileclip_deploy.training.records import open_reinforced

        data = open_reinforced(cfg.data, cfg.teachers, cfg.syn_text_key)
    if student is None:
        from mobileclip_deploy import create_model

        student = create_model(cfg.student, cfg.init)
    env = distributed.init_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    trainer = Trainer(cfg, data, student, env, resume=resume)  # every check before anything is written
    with run_folder_lock(out) if env.is_main else nullcontext():
        with _progress(console if env.is_main else None, trainer) as on_step:
            trainer.run(on_step=on_step)
        summary: dict = {"student": str(trainer.student_path), "variant": trainer.variant.name,
                         "loss": trainer.kind, "steps": trainer.step, "teachers": [t.name for t in data.teachers],
                         "teacher_scales": cfg.teacher_scales, "lr": cfg.lr, "warmup": cfg.warmup,
                         "global_batch": cfg.batch_size * env.world_size * cfg.accum, "device": str(env.device),
                         "final": trainer.history[-1] if trainer.history else None}
        if env.is_main:
            held = trainer.held_idx or trainer.train_idx
            summary["agreement_on"] = "held-out images" if trainer.held_idx else "training images"
            summary["agreement"] = agreement(trainer.student, [trainer.samples[i] for i in held], data,
                                             cfg.teacher_scales, env.device,
                                             teacher_text=trainer.kind == "dime-fm" and cfg.dime_vl == "image")
            model_opts = f"--model {trainer.variant.name} --checkpoint {trainer.student_path}"
            summary["next"] = [f"mobileclip-deploy eval {model_opts} --data LABELLED_FOLDER",
                               f"mobileclip-deploy export {model_opts} -o {out / 'export'}"]
            write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n", replace=True)
    return summary


@contextmanager
def _progress(console, trainer: Trainer) -> Iterator[Callable[[dict], None] | None]:
    """A rich bar with loss and throughput on the main rank; nothing elsewhere."""
    if console is None:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("distill"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task("distill", total=trainer.cfg.steps, completed=trainer.step, info="")

        def on_step(record: dict) -> None:
            bar.update(task, completed=record["step"],
                       info=f"loss {record['loss']:.4f}  {record['images_per_s']:.1f} img/s  lr {record['lr']:.2e}")

        yield on_step
