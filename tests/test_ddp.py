"""Two gloo processes with batch B/2 each give the losses and gradients of one process with batch B."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from distill_fakes import make_data, tiny_student, without_synthetic_every_other
from mobileclip_deploy.training import distributed
from mobileclip_deploy.training.loop import DistillConfig, Trainer

STEPS, BATCH = 2, 8
# dime-fm-image: the released VL form, text tower frozen; mobileclip-partial: every other photo has no synthetic
# caption, so the ranks hold different numbers of synthetic pairs
LOSSES = ("mobileclip", "mobileclip-partial", "dime-fm", "dime-fm-image")


def _train(env: distributed.DistEnv, batch: int, photos: Path, out: Path, loss: str) -> dict:
    torch.set_num_threads(1)
    mobileclip = loss.startswith("mobileclip")
    data = make_data(photos, captions=mobileclip, synthetic=mobileclip, dims=(6, 10) if mobileclip else (16, 16))
    if loss == "mobileclip-partial":
        data = without_synthetic_every_other(data)
    cfg = DistillConfig(student="tiny-vit", data="hand-made", out=str(out), steps=STEPS, batch_size=batch, lr=1e-3,
                        warmup=1, save_every=1000, loss="mobileclip" if mobileclip else "dime-fm",
                        dime_vl="image" if loss == "dime-fm-image" else "both")
    trainer = Trainer(cfg, data, tiny_student(), env)
    losses, grads = [], None
    for _ in range(STEPS):
        losses.append(trainer.train_step())
        if grads is None:  # after DDP's all-reduce (and the clip, applied to the same global norm)
            grads = {n: p.grad.clone() for n, p in trainer.student.named_parameters() if p.grad is not None}
    return {"losses": losses, "grads": grads}


def _worker(rank: int, port: int, photos: Path, out: Path) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    env = distributed.init_distributed("cpu")
    try:
        for loss in LOSSES:
            torch.save(_train(env, BATCH // 2, photos, out / f"{loss}{rank}", loss), out / f"{loss}-rank{rank}.pt")
    finally:
        distributed.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(shared_dir: Path, module_tmp) -> Path:
    out = module_tmp("ddp")
    mp.spawn(_worker, args=(_free_port(), shared_dir / "data" / "imagenet-samples", out), nprocs=2, join=True)
    return out


@pytest.mark.parametrize("loss", LOSSES)
def test_two_ranks_match_one(two_ranks: Path, shared_dir: Path, tmp_path: Path, loss: str) -> None:
    photos = shared_dir / "data" / "imagenet-samples"
    single = _train(distributed.DistEnv(0, 0, 1, torch.device("cpu")), BATCH, photos, tmp_path / "single", loss)
    for rank in range(2):
        ddp = torch.load(two_ranks / f"{loss}-rank{rank}.pt", weights_only=True)
        for got, want in zip(ddp["losses"], single["losses"]):
            for key in want:
                if key not in ("grad_norm", "lr", "scale"):
                    assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (rank, key)
            assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4)
        assert ddp["grads"].keys() == single["grads"].keys()
        for name, g in single["grads"].items():
            torch.testing.assert_close(ddp["grads"][name], g, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
