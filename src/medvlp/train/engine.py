"""The training loop shared by every method, single-process or under ``torchrun``.

One optimizer step::

    for each of grad_accum micro-batches (DDP no_sync on all but the last):
        with autocast(precision): out = method(batch)          # {"loss": ..., other scalars}
        backward(out["loss"] / grad_accum)                     # GradScaler only for fp16
    clip_grad_norm_(trainable params, clip_grad_norm); optimizer.step(); scheduler.step()

Every ``log_every`` steps (and at checkpoint steps and the last step) the window means of the
method's outputs are averaged over ranks and appended to ``out_dir/metrics.jsonl``; every
``ckpt_every`` steps and at the end ``out_dir/checkpoint.pt`` is written atomically.

Reproducibility and resume:

- Each rank seeds Python/NumPy/torch with ``seed + rank``: ranks must draw *different* augmentations
  and dropout masks (identical ones would waste half the batch), while the data order comes from
  :class:`~medvlp.train.sampler.ShardedEpochSampler`, which uses the shared ``seed`` so the ranks
  agree on one permutation and split it.
- The DataLoader gets its own generator seeded from (seed, rank, epoch), so creating a loader does
  not consume the global RNG: the global stream (dropout, augmentation in the main process)
  depends only on the steps taken, which is what a checkpoint captures.
- A checkpoint stores the step, the epoch and the micro-batches already consumed in it; on
  resume the sampler skips those and every RNG is restored. On CPU with ``num_workers=0`` a resumed
  run is bit-identical to an uninterrupted one. With workers, their RNG streams restart at the
  epoch's seed, so augmentations after a resume differ (the data order does not).
- Each epoch takes ``steps_per_epoch = (N // world_size // batch_size) // grad_accum`` optimizer
  steps; the few samples that do not fill a whole step are left out of that epoch (they are in
  other epochs, the permutation changes).
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from medvlp.config import StrictConfig, save_config
from medvlp.errors import ConfigError
from medvlp.methods.base import (frozen_state_names, load_trainable_state_dict,
                                 trainable_parameters, trainable_state_dict)
from medvlp.train import dist
from medvlp.train.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_NAME, capture_rng_state,
                                     load_checkpoint, restore_rng_state, save_checkpoint)
from medvlp.train.metrics_log import METRICS_NAME, MetricsLog, ProgressBar, read_metrics
from medvlp.train.optim import build_optimizer, build_scheduler
from medvlp.train.sampler import ShardedEpochSampler
from medvlp.utils import seed_everything, stable_hash

# Config fields that fix which samples each step sees; changing them breaks an exact resume.
_DATA_ORDER_FIELDS = ("seed", "batch_size", "grad_accum")


class TrainConfig(StrictConfig):
    """Everything the loop needs; saved as ``out_dir/train_config.yaml``."""

    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)  # optimizer steps; when set, overrides epochs
    batch_size: int = Field(64, ge=1)          # per process, per micro-batch
    grad_accum: int = Field(1, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    momentum: float = Field(0.9, ge=0)         # sgd only
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # cosine floor as a fraction of lr
    clip_grad_norm: float | None = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA if supported
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    ckpt_every: int = Field(0, ge=0)           # steps; 0 = only at the end
    log_every: int = Field(10, ge=1)
    device: str = "auto"
    progress: bool = True
    tensorboard: bool = False


@dataclass
class TrainResult:
    """What :func:`fit` returns (the same on every rank)."""

    steps: int
    epochs: float
    final: dict[str, float]   # the last metrics record: window-mean losses, lr, grad_norm
    history: list[dict]       # all records of metrics.jsonl, including those before a resume
    out_dir: Path


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors in nested dicts/lists/tuples to ``device`` (other values are kept)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = plain fp32)."""
    bf16_ok = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and bf16_ok else None
    if precision == "fp32":
        return None
    if precision == "bf16":
        if not bf16_ok:
            raise ConfigError(f"precision='bf16': not supported on {device}; use 'fp16' or 'fp32'")
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError(f"precision='fp16' needs a CUDA device (got {device}); use 'bf16' "
                              "or 'fp32'")
        return torch.float16
    raise ConfigError(f"precision={precision!r}: expected auto, fp32, bf16 or fp16")


def _config_hash(cfg: TrainConfig) -> str:
    return stable_hash(cfg.model_dump(mode="json"))


def _check_outputs(out: Any) -> dict[str, torch.Tensor]:
    if not isinstance(out, Mapping) or "loss" not in out:
        raise TypeError(f"method.forward(batch) must return a dict with a 'loss' key, got "
                        f"{type(out).__name__}{'' if not isinstance(out, Mapping) else sorted(out)}")
    for k, v in out.items():
        if not isinstance(v, torch.Tensor) or v.numel() != 1:
            raise TypeError(f"method.forward(batch)[{k!r}] must be a scalar tensor, got "
                            f"{type(v).__name__}{tuple(v.shape) if isinstance(v, torch.Tensor) else ''}")
    return dict(out)


def _train_step(model: nn.Module, batches: Iterator, cfg: TrainConfig, device: torch.device,
                amp_dtype: torch.dtype | None, scaler: torch.amp.GradScaler | None,
                optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> dict[str, torch.Tensor]:
    """One optimizer step over ``grad_accum`` micro-batches; returns the step's mean outputs."""
    sums: dict[str, torch.Tensor] = {}
    for micro in range(cfg.grad_accum):
        batch = next(batches)
        if not isinstance(batch, Mapping):
            raise TypeError(f"batches must be dicts of tensors (image, label, ...), got "
                            f"{type(batch).__name__}; return a dict from the dataset or collate_fn")
        batch = move_to_device(batch, device)
        # Gradients are all-reduced only on the last micro-batch; earlier ones accumulate locally.
        last = micro == cfg.grad_accum - 1
        sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not last \
            else nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                enabled=amp_dtype is not None):
                out = _check_outputs(model(batch))
            loss = out["loss"].float() / cfg.grad_accum
            (scaler.scale(loss) if scaler is not None else loss).backward()
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float().reshape(()) / cfg.grad_accum
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    if cfg.clip_grad_norm is not None:
        sums["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm).detach()
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return sums


def fit(method: nn.Module, dataset: Dataset, cfg: TrainConfig, out_dir: str | Path, *,
        resume: bool = False, collate_fn: Callable | None = None,
        on_log: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``method`` on ``dataset`` and write metrics, config and checkpoint to ``out_dir``.

    Runs as one process or as one rank of ``torchrun``/``srun`` (the process group is created from
    the environment and torn down again if this call created it). ``method`` is trained in place.
    ``resume=True`` continues from ``out_dir/checkpoint.pt`` (with a warning and from scratch when
    there is none). ``on_log`` is called with each metrics record on the main rank; it may evaluate
    the method (the loop switches it back to train mode afterwards).
    """
    created_group = not dist.is_initialized()
    info = dist.init_distributed(cfg.device)
    try:
        return _fit(method, dataset, cfg, Path(out_dir), info, resume, collate_fn, on_log)
    finally:
        if created_group:
            dist.cleanup()


def _fit(method: nn.Module, dataset: Dataset, cfg: TrainConfig, out_dir: Path,
         info: dist.DistInfo, resume: bool, collate_fn: Callable | None,
         on_log: Callable[[dict], None] | None) -> TrainResult:
    params = [p for _, p in trainable_parameters(method)]
    if not params:
        raise ConfigError(f"{type(method).__name__} has no trainable parameters "
                          "(every parameter has requires_grad=False): nothing to train")
    seed_everything(cfg.seed + info.rank)
    device = info.device
    method.to(device)
    amp_dtype = resolve_precision(cfg.precision, device)

    sampler = ShardedEpochSampler(len(dataset), seed=cfg.seed, rank=info.rank,
                                  world_size=info.world_size, shuffle=True, drop_last=True)
    steps_per_epoch = sampler.shard_size() // cfg.batch_size // cfg.grad_accum
    if steps_per_epoch == 0:
        raise ConfigError(f"dataset of {len(dataset)} samples is smaller than one optimizer step "
                          f"(batch_size {cfg.batch_size} x grad_accum {cfg.grad_accum} x "
                          f"{info.world_size} processes)")
    total_steps = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch

    optimizer = build_optimizer(method, cfg)
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    ckpt_path = out_dir / CHECKPOINT_NAME
    step, history, rng_states = 0, [], None
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        _check_resumable(state, cfg, info, ckpt_path)
        load_trainable_state_dict(method, state["model"], source=str(ckpt_path))
        if state.get("extra") and hasattr(method, "load_extra_state"):
            method.load_extra_state(state["extra"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step, rng_states = int(state["step"]), state["rng"]
        history = read_metrics(out_dir / METRICS_NAME, upto_step=step)
    elif resume:
        warnings.warn(f"resume=True but {ckpt_path} does not exist: starting a fresh run from "
                      "step 0", RuntimeWarning, stacklevel=3)
    dist.barrier()  # every rank has read the old metrics before the main rank rewrites them

    model: nn.Module = method
    if info.distributed:
        # Frozen parameters never get gradients; also keep them (and frozen modules' buffers) out
        # of DDP's start-up broadcast and per-forward buffer sync.
        ignore = frozen_state_names(method)
        if ignore:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(method, ignore)
        model = DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None)

    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "train_config.yaml")
    log = MetricsLog(out_dir, write=info.is_main, tensorboard=cfg.tensorboard)
    log.start(history)
    bar = ProgressBar(total_steps, step, enabled=info.is_main and cfg.progress)
    if rng_states is not None:
        # Last, so nothing above (model moves, DDP set-up) can shift the restored streams.
        restore_rng_state(rng_states[info.rank])

    window: dict[str, torch.Tensor] = {}
    window_steps, window_start = 0, time.perf_counter()
    samples_per_step = cfg.batch_size * cfg.grad_accum * info.world_size
    model.train()
    try:
        while step < total_steps:
            epoch, step_in_epoch = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch)
            sampler.set_start(step_in_epoch * cfg.grad_accum, cfg.batch_size)
            loader = DataLoader(
                dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                num_workers=cfg.num_workers, collate_fn=collate_fn,
                pin_memory=device.type == "cuda",
                generator=torch.Generator().manual_seed((cfg.seed + info.rank) * 100_003 + epoch))
            batches = iter(loader)
            for _ in range(steps_per_epoch - step_in_epoch):
                lr = optimizer.param_groups[0]["lr"]
                out = _train_step(model, batches, cfg, device, amp_dtype, scaler, optimizer, params)
                scheduler.step()
                step += 1
                for k, v in out.items():
                    window[k] = window.get(k, 0.0) + v
                window_steps += 1
                ckpt_now = step == total_steps or (cfg.ckpt_every and step % cfg.ckpt_every == 0)
                # Log at checkpoints too, so log windows never straddle a resume point and a
                # resumed run writes exactly the records of an uninterrupted one.
                if ckpt_now or step % cfg.log_every == 0:
                    record = _make_record(window, window_steps, step, steps_per_epoch, lr,
                                          samples_per_step, time.perf_counter() - window_start,
                                          guard_nan=scaler is None)
                    history.append(record)
                    log.write(record)
                    if on_log is not None and info.is_main:
                        on_log(record)
                        model.train()  # the callback may have evaluated the method in eval mode
                    bar.update(step, record)
                    window, window_steps, window_start = {}, 0, time.perf_counter()
                else:
                    bar.update(step)
                if ckpt_now:
                    _save(ckpt_path, method, optimizer, scheduler, scaler, cfg, info, step,
                          steps_per_epoch)
                if step >= total_steps:
                    break
            del batches, loader
    finally:
        bar.close()
        log.close()

    final = {k: v for k, v in (history[-1] if history else {}).items()
             if k not in ("step", "epoch", "time", "images_per_s")}
    return TrainResult(steps=step, epochs=step / steps_per_epoch, final=final, history=history,
                       out_dir=out_dir)


def _make_record(window: dict[str, torch.Tensor], n_steps: int, step: int, steps_per_epoch: int,
                 lr: float, samples_per_step: int, elapsed: float, guard_nan: bool) -> dict:
    keys = sorted(window)  # same order on every rank for the all-reduce
    means = dist.all_reduce_mean(torch.stack([window[k] for k in keys]) / n_steps).tolist()
    record: dict[str, Any] = {"step": step, "epoch": step / steps_per_epoch}
    record.update(zip(keys, means))
    if guard_nan and not math.isfinite(record["loss"]):
        raise FloatingPointError(f"loss is {record['loss']} at step {step}: training diverged "
                                 "(lower lr, enable clip_grad_norm or check the inputs)")
    record["lr"] = lr
    record["images_per_s"] = n_steps * samples_per_step / max(elapsed, 1e-9)
    record["time"] = time.time()
    return record


def _save(path: Path, method: nn.Module, optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler | None,
          cfg: TrainConfig, info: dist.DistInfo, step: int, steps_per_epoch: int) -> None:
    rng = dist.all_gather_object(capture_rng_state())  # collective: every rank takes part
    if not info.is_main:
        return
    epoch, step_in_epoch = divmod(step, steps_per_epoch)
    extra = method.extra_state() if hasattr(method, "extra_state") else {}
    save_checkpoint({
        "format": CHECKPOINT_FORMAT,
        "step": step, "epoch": epoch, "batch_in_epoch": step_in_epoch * cfg.grad_accum,
        "world_size": info.world_size,
        "config": cfg.model_dump(mode="json"), "config_hash": _config_hash(cfg),
        "model": {k: v.cpu() for k, v in trainable_state_dict(method).items()},
        "extra": {k: v.detach().cpu() for k, v in extra.items()},
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng,
    }, path)


def _check_resumable(state: dict, cfg: TrainConfig, info: dist.DistInfo, path: Path) -> None:
    if state["world_size"] != info.world_size:
        raise ConfigError(f"{path}: written by {state['world_size']} processes, resumed with "
                          f"{info.world_size}; resume with the same number of processes")
    if state["config_hash"] == _config_hash(cfg):
        return
    old = state.get("config", {})
    changed = sorted(k for k, v in cfg.model_dump(mode="json").items() if old.get(k) != v)
    order = [k for k in changed if k in _DATA_ORDER_FIELDS]
    if order:
        raise ConfigError(f"{path}: {order} differ from the checkpoint's config; they fix which "
                          "samples each step sees, so the run cannot be resumed with new values")
    warnings.warn(f"{path}: resuming with a changed config ({changed})", RuntimeWarning,
                  stacklevel=4)
