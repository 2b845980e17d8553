"""Process-group helpers for `torchrun`: one process per device, features gathered across ranks with autograd.

Under `torchrun` every rank computes the loss on its own rows against the columns of the whole (global) batch
(open_clip's `--local-loss --gather-with-grad`), so the similarity matrices cover the global batch while memory
grows linearly with it. Without `torchrun` (WORLD_SIZE unset or 1) every helper is the identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_info_from_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) as `torchrun` sets them; (0, 0, 1) for a plain process."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


def check_device(device: str) -> torch.device:
    """`cpu`, `cuda` or `cuda:N` that exists here; anything else is refused by name (not a traceback later)."""
    from mobileclip_deploy.errors import UserError

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {device!r} is not a device: use cpu or cuda (cuda:N for one GPU).") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {device}: training runs on cpu or cuda only.")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {device}: no CUDA GPU is visible here; use --device cpu.")
        if dev.index is not None and dev.index >= count:
            raise UserError(f"--device {device}: only {count} CUDA GPU(s) here (cuda:0 to cuda:{count - 1}).")
    return dev


def init_distributed(device: str | None = None) -> DistEnv:
    """Join the process group torchrun describes: NCCL when each rank has a GPU, gloo on CPU."""
    rank, local_rank, world = world_info_from_env()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = check_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistEnv(rank, local_rank, world, dev)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_features(tensor: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
    """Concatenate every rank's rows in rank order; with grad, the backward sums each rank's share back."""
    if world_size() == 1:
        return tensor
    if with_grad:
        import torch.distributed.nn.functional as dist_nn

        return torch.cat(dist_nn.all_gather(tensor), dim=0)
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The average of a (detached) scalar over ranks: the global-batch loss when each rank holds its rows' mean."""
    if world_size() == 1:
        return value.detach()
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / world_size()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
