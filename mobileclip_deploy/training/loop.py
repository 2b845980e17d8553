"""The distillation loop: AdamW + warm-up/cosine, clipping, AMP, accumulation, DDP, atomic checkpoints, resume.

Determinism is by construction: micro-batch m of the run holds the samples at positions [m*G, (m+1)*G) of an
endless sequence of per-epoch permutations seeded by (seed, epoch), each rank taking its own contiguous slice
(G = per-rank batch x ranks). So a resumed run and an N-rank run see exactly the batches of an uninterrupted
1-rank run with the same global batch; the model and optimizer state are the only other state.
The records are read once and held in memory (photo folders of up to tens of thousands of images; streaming
the 12M DataCompDR shards is not implemented).
"""

from __future__ import annotations

import dataclasses
import hashlib
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

from mobileclip_deploy.atomic import atomic_path, check_folder, exclusive_folder, write_text
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
# Below this many samples per BatchNorm a batch's statistics are too noisy to update the running ones: a student
# initialised from its teacher (S0, batch 4) fell from 100% to 42% agreement after two steps at lr ~0 with them
# updated, and stayed at 100% with them frozen. Smaller batches train with frozen BN statistics unless asked.
MIN_BN_BATCH = 16
# The only DistillConfig fields that do not shape a run's result; every other field (and any added later) is
# part of its identity (run_identity), which a resume must match. `data`, `init` and `teachers` enter it as
# content hashes and the teachers' records instead of paths and names.
NOT_IDENTITY = ("data", "out", "init", "teachers", "save_every", "device")


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
    freeze_bn_stats: bool | None = None  # None: frozen when a BatchNorm sees fewer than MIN_BN_BATCH samples


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
                 resume: bool = False):
        self.data, self.env = data, env
        self.out = Path(cfg.out)
        self.variant = student.variant
        self.kind = choose_loss(cfg.loss, data)
        self.samples = list(data.samples())
        self.train_idx, self.held_idx = split_holdout(self.samples, cfg.holdout, cfg.seed)
        check_inputs(cfg, data, self.variant, len(self.train_idx), cfg.batch_size * env.world_size, self.kind)
        self.cfg = cfg = resolve(cfg, data, self.kind, env)  # the caller's config stays as given
        self.identity = run_identity(cfg, data, self.samples)
        self.objective = Objective(self.kind, [t.dim for t in data.teachers], cfg.teacher_scales, cfg)
        if env.device.type == "cpu":  # otherwise every step re-faults its activations (training/memory.py)
            keep_freed_memory()
            use_fast_depthwise(student)  # 7x7 weight gradients, 1x1 as multiplies (training/depthwise.py)
            share_repmixer_statistics(student)  # one BatchNorm pass for two; measured on CPU only (repmixer.py)
        self.student = student.to(env.device).train()
        self.frozen_bn = [m for m in self.student.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] \
            if cfg.freeze_bn_stats else []
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
        for bn in self.frozen_bn:  # normalise with the running statistics and leave them as they are
            bn.eval()
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
        state = {"step": self.step, "model": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler else {}, "identity": json.dumps(self.identity)}
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
        changed = [f"{k} ({_short(saved.get(k))} -> {_short(self.identity.get(k))})"
                   for k in sorted(set(saved) | set(self.identity))
                   if json.dumps(saved.get(k)) != json.dumps(self.identity.get(k))]
        if changed:
            raise UserError(f"--resume: {self.out} was started with other settings: {', '.join(changed)}. "
                            "Resume with the same options and inputs, or start a new run folder.")
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        log = self.out / "log.jsonl"
        lines = log.read_text().splitlines() if log.is_file() else []
        self.history = [h for h in map(json.loads, lines) if h["step"] <= self.step]

    # -- the run -------------------------------------------------------------------------------------------
    def run(self, on_step: Callable[[dict], None] | None = None) -> list[dict]:
        cfg = self.cfg
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
        return self.history


def resolve(cfg: DistillConfig, data, kind: str, env: distributed.DistEnv) -> DistillConfig:
    """A copy of `cfg` with every default filled in (loss, scales, lr, warm-up, weight decay, world size, whether
    BatchNorm statistics are frozen)."""
    world_size = env.world_size
    scales = cfg.teacher_scales or [float(t.logit_scale) for t in data.teachers]
    if len(scales) != len(data.teachers):
        raise UserError(f"--teacher-scale was given {len(scales)} times but the data has {len(data.teachers)} "
                        f"teachers ({', '.join(t.name for t in data.teachers)}).")
    global_batch = cfg.batch_size * world_size
    return dataclasses.replace(
        cfg, loss=kind, world_size=world_size, teacher_scales=list(scales),
        lr=cfg.lr if cfg.lr is not None else default_lr(global_batch * cfg.accum),
        warmup=cfg.warmup if cfg.warmup is not None else min(1000, cfg.steps // 10),
        weight_decay=cfg.weight_decay if cfg.weight_decay is not None else 0.2 if kind == "mobileclip" else 0.05,
        freeze_bn_stats=cfg.freeze_bn_stats if cfg.freeze_bn_stats is not None else bn_batch(cfg, env) < MIN_BN_BATCH)


def bn_batch(cfg: DistillConfig, env: distributed.DistEnv) -> int:
    """Samples each BatchNorm sees per forward: the global batch under SyncBatchNorm (CUDA DDP), else the rank's."""
    return cfg.batch_size * (env.world_size if env.device.type == "cuda" else 1)


def _digest(parts: list[str | bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()


def run_identity(cfg: DistillConfig, data, samples: list) -> dict:
    """Everything that shapes a run's result: every option of a resolved config but NOT_IDENTITY, the init
    checkpoint's sha256, the teachers as the records describe them, and the records themselves (each shard's
    sha256, the sample uids, the sentence bank). A resume refuses any difference, naming it."""
    from mobileclip_deploy.hashing import sha256_path

    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IDENTITY}
    bank = data.sentence_emb
    return {**json.loads(json.dumps(options)),  # tuples as lists, as they read back from state.pt
            "init_sha256": sha256_path(cfg.init) if cfg.init else None,
            "teachers": [dataclasses.asdict(t) for t in data.teachers],
            "shards_sha256": _digest([sha256_path(s) for s in data.shards]),
            "samples_sha256": _digest([s.uid for s in samples]),
            "sentences_sha256": None if bank is None else _digest([*data.sentences, bank.tobytes()])}


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:12] + "..."


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


def distill(cfg: DistillConfig, resume: bool = False, console=None, student: nn.Module | None = None,
            data=None) -> dict:
    """Open the records, train, measure agreement and write `summary.json`; returns the summary.

    `console` (stderr) shows progress. `student` and `data` replace `create_model(cfg.student, cfg.init)` and
    `open_reinforced(cfg.data)` (tests pass tiny configurations and hand-made records).
    """
    from mobileclip_deploy.training.agreement import agreement

    out = check_folder(cfg.out)
    if not resume and (out / "state.pt").exists():
        raise UserError(f"{out} already holds a run (state.pt); pass --resume to continue it, or another -o.")
    env = distributed.init_distributed(cfg.device)  # an unknown device is refused before any loading
    if data is None:
        from mobileclip_deploy.training.records import open_reinforced

        data = open_reinforced(cfg.data, cfg.teachers, cfg.syn_text_key)
    torch.manual_seed(cfg.seed)  # before the student is built: --seed also fixes a random initialisation
    if student is None:
        from mobileclip_deploy import create_model

        student = create_model(cfg.student, cfg.init, model_flag="--student {}")
    trainer = Trainer(cfg, data, student, env, resume=resume)  # every check before anything is written
    asked, cfg = cfg, trainer.cfg
    if trainer.frozen_bn and asked.freeze_bn_stats is None and console is not None and env.is_main:
        console.print(f"note: BatchNorm statistics stay frozen: {bn_batch(cfg, env)} samples per BatchNorm are too "
                      f"few to estimate them (fewer than {MIN_BN_BATCH}); --update-bn-stats updates them anyway",
                      markup=False, highlight=False)
    with exclusive_folder(out, "distill") if env.is_main else nullcontext():
        with _progress(console if env.is_main else None, trainer) as on_step:
            trainer.run(on_step=on_step)
        summary: dict = {"student": str(trainer.student_path), "variant": trainer.variant.name,
                         "loss": trainer.kind, "steps": trainer.step, "teachers": [t.name for t in data.teachers],
                         "teacher_scales": cfg.teacher_scales, "lr": cfg.lr, "warmup": cfg.warmup,
                         "global_batch": cfg.batch_size * env.world_size * cfg.accum, "device": str(env.device),
                         "bn_stats_frozen": bool(trainer.frozen_bn),
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
    """The package's progress display (bar or plain lines) with loss and throughput on the main rank."""
    if console is None:
        yield None
        return
    from mobileclip_deploy.progress import progress

    with progress(console, info=True, transient=False) as bar:
        task = bar.add_task("distill", total=trainer.cfg.steps, completed=trainer.step, info="")

        def on_step(record: dict) -> None:
            bar.update(task, completed=record["step"],
                       info=f"loss {record['loss']:.4f}  {record['images_per_s']:.1f} img/s  lr {record['lr']:.2e}")

        yield on_step
