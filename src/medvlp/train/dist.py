"""Process-group set-up shared by every entry point: one CPU process, ``torchrun`` or SLURM.

The environment decides the world:

- ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``);
- ``srun`` sets ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``; the rendezvous address
  (``MASTER_ADDR``/``MASTER_PORT``) must then be exported by the job script;
- otherwise this is a single process and no process group is created.

The backend follows the device: NCCL when each rank drives a CUDA device, gloo on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from medvlp.errors import ConfigError
from medvlp.utils import resolve_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job and which device it drives."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None for a single process (no process group)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError as e:
        raise ConfigError(f"environment variable {name}={value!r}: expected an integer") from e


def world_from_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` read from the torchrun or SLURM environment.

    ``(0, 1, 0)`` when neither is present. A SLURM job with several tasks must export
    ``MASTER_ADDR`` and ``MASTER_PORT`` (we do not guess a node name from the node list).
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
        local = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank
    elif "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
        rank, world = _env_int("SLURM_PROCID"), _env_int("SLURM_NTASKS")
        local = _env_int("SLURM_LOCALID") if "SLURM_LOCALID" in os.environ else 0
        if world > 1:
            missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
            if missing:
                raise ConfigError(
                    f"SLURM job with {world} tasks: set {' and '.join(missing)} in the job script "
                    "(e.g. MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1))")
    else:
        return 0, 1, 0
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"rank {rank} is not in a world of size {world}")
    return rank, world, local


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by the environment (idempotent) and pick the device.

    With several processes and CUDA available each rank takes ``cuda:LOCAL_RANK`` and NCCL;
    on CPU (or ``device="cpu"``) the backend is gloo.
    """
    rank, world, local = world_from_env()
    if world == 1:
        return DistInfo(0, 1, 0, resolve_device(device), None)
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        if device not in ("auto", "cpu"):
            raise ConfigError(f"device={device!r}: distributed runs support 'auto', 'cpu' or 'cuda'")
        dev, backend = torch.device("cpu"), "gloo"
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise ConfigError(f"world size {world}: MASTER_ADDR and MASTER_PORT must be set")
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistInfo(rank, world, local, dev, backend)


def is_initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def get_rank() -> int:
    return tdist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return tdist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes files and prints."""
    return get_rank() == 0


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all ranks (a copy; the input is left untouched)."""
    out = tensor.detach().clone()
    if get_world_size() > 1:
        tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
        out /= get_world_size()
    return out


def all_gather_object(obj: object) -> list[object]:
    """``[obj_rank0, obj_rank1, ...]`` on every rank; ``[obj]`` in a single process."""
    if get_world_size() == 1:
        return [obj]
    out: list[object] = [None] * get_world_size()
    tdist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if get_world_size() > 1:
        tdist.barrier()


def cleanup() -> None:
    """Leave the process group (no-op in a single process)."""
    if is_initialized():
        tdist.destroy_process_group()
