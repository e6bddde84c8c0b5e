"""One training loop for every objective: AdamW, warm-up + cosine schedule, gradient
accumulation and clipping, ``torchrun`` data parallelism, atomic checkpoints with exact resume.

Data arrive as tensors in memory (:class:`TrainData`): the embedded world and other small
datasets fit in RAM; larger file-backed ones are LazyImages, whose next batches are decoded on threads
while a step runs (:func:`_prefetch`). The objective decides which fields
it needs (captions for ``contrastive``, labels for ``supervised``, images only for ``simclr``).

Determinism: one ``torch.Generator`` seeded with ``config.seed`` draws each epoch's order and
every augmentation, in the same sequence whatever the number of processes; a checkpoint stores
it (with the epoch's order, the optimizer, the schedule and the global RNG), so a resumed run
continues exactly where the interrupted one was. Under ``torchrun`` each rank takes every
world-size-th row of the global batch and gradients are averaged (DDP), so the global batch and
the loss curve are those of one process (up to float reduction order).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from ..data.lazy import LazyImages
from ..distributed import world as world_size
from ..io import atomic_write_text
from ..models.factory import ModelSpec, normalize_images, save_checkpoint
from ..progress import progress_bar
from .holdout import EarlyStopping, split_holdout
from .objectives import get_objective

LATEST = "latest"  # text file in the checkpoint folder naming the newest complete checkpoint


@dataclass
class TrainConfig:
    objective: str = "supervised"
    epochs: int = 10
    batch_size: int = 256  # global batch (all processes together)
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    warmup_steps: int | None = None  # warm-up in optimizer steps; replaces warmup_fraction when set
    label_smoothing: float = 0.0
    grad_clip: float = 1.0
    grad_accum: int = 1  # micro-batches per optimizer step
    augment: bool = True
    seed: int = 0
    checkpoint_every: int = 0  # optimizer steps between checkpoints (0: only at the end, when a folder is given)
    amp: bool = True  # bf16 autocast on GPU; ignored on CPU
    gather_with_grad: bool = True  # contrastive under DDP: gather features with gradients (the global loss)
    local_loss: bool = False  # contrastive under DDP: each rank's rows against all (open_clip's --local-loss)
    temperature: float = 0.2  # simclr NT-Xent temperature
    log_every: int = 0  # write the loss to the log every this many steps (0: once per epoch)
    holdout: float = 0.0  # share of the (labelled) training rows held out to measure accuracy each epoch
    patience: int = 0  # with holdout: stop after this many epochs without a better held-out accuracy (0: never)

    def validate(self) -> "TrainConfig":
        get_objective(self.objective)
        for name in ("epochs", "batch_size", "grad_accum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")
        if not self.lr > 0:  # NaN too
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.warmup_steps is not None and (isinstance(self.warmup_steps, bool)
                                              or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0):
            raise ValueError(f"warmup_steps must be an integer >= 0 or null, got {self.warmup_steps!r}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.log_every < 0:
            raise ValueError(f"log_every must be >= 0, got {self.log_every}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0 <= self.holdout < 0.5:  # NaN too
            raise ValueError(f"holdout must be in [0, 0.5), got {self.holdout}")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {self.patience!r}")
        if self.patience and not self.holdout:
            raise ValueError("patience needs holdout > 0: early stopping watches the held-out accuracy")
        return self


@dataclass
class TrainData:
    """images: uint8 (N, 3, H, W); labels: int64 (N,) or None; tokens: int64 (N, L) or None."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    tokens: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index: torch.Tensor, images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = {"images": self.images[index] if images is None else images}
        if self.labels is not None:
            out["labels"] = self.labels[index]
        if self.tokens is not None:
            out["tokens"] = self.tokens[index]
        return out


def augment_params(b: int, generator: torch.Generator, max_shift: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips (B,) and translations (B, 2) for a batch of `b` images."""
    flip = torch.rand(b, generator=generator) < 0.5
    shift = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator)
    return flip, shift


def apply_augment(images: torch.Tensor, flip: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Flip and translate each image (edge-replicated) by its parameters from :func:`augment_params`."""
    b, _, h, w = images.shape
    images = torch.where(flip.view(b, 1, 1, 1), images.flip(3), images)
    rows = (torch.arange(h).view(1, h) + shift[:, :1]).clamp(0, h - 1)  # (B, H)
    cols = (torch.arange(w).view(1, w) + shift[:, 1:]).clamp(0, w - 1)  # (B, W)
    batch_index = torch.arange(b).view(b, 1, 1)
    # (B, H, W, C) gather of shifted rows and columns, back to (B, C, H, W)
    moved = images.permute(0, 2, 3, 1)[batch_index, rows.view(b, h, 1), cols.view(b, 1, w)]
    return moved.permute(0, 3, 1, 2)


def augment(images: torch.Tensor, generator: torch.Generator, max_shift: int = 3) -> torch.Tensor:
    """Random horizontal flip and translation by up to `max_shift` pixels (edge-replicated)."""
    return apply_augment(images, *augment_params(len(images), generator, max_shift))


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the message names the last good checkpoint."""


# --- checkpoints -----------------------------------------------------------------------------------------------

def latest_checkpoint(folder) -> Path | None:
    """The newest complete checkpoint under `folder` (named by its ``latest`` file), or None."""
    marker = Path(folder) / LATEST
    if not marker.is_file():
        return None
    path = Path(folder) / marker.read_text().strip()
    return path if (path / "state.pt").is_file() else None


def save_training_state(folder, step: int, model, spec: ModelSpec, optimizer, scheduler, generator,
                        order: torch.Tensor, epoch: int, history: list, keep: int = 2) -> Path:
    """Write ``folder/step-XXXXXXX/`` (weights in safetensors, ``model.json``, ``state.pt`` with the
    optimizer, schedule, step, epoch order and RNG states) through a temporary folder and a rename,
    then point ``folder/latest`` at it; older checkpoints beyond the newest `keep` are removed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    tmp = folder / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(model, spec, tmp)
    torch.save({"step": step, "epoch": epoch, "order": order, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(), "history": json.dumps(history)}, tmp / "state.pt")
    final = folder / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_text(folder / LATEST, name + "\n")
    done = sorted(p for p in folder.glob("step-*") if p.is_dir())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_training_state(path) -> dict:
    """The ``state.pt`` of a checkpoint folder (``weights_only=True``: nothing is unpickled)."""
    return torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=True)


# --- the loop --------------------------------------------------------------------------------------------------

def train(model, data: TrainData, config: TrainConfig, *, log_path=None, progress=True, desc="train",
          checkpoint_dir=None, spec: ModelSpec | None = None, resume: bool = False, on_step=None):
    """Train `model` in place on `data`; return the list of logged metrics (one dict per epoch).

    With `checkpoint_dir` (and the model's `spec`), a checkpoint is written every
    ``config.checkpoint_every`` optimizer steps and at the end; with `resume`, training continues
    from the newest one there, exactly (same data order, augmentations, optimizer state), and says so:
    a ``{"run": desc, "event": "resume", "step": N}`` record in the log and a line on stderr.
    `on_step(step, model)`, when given, is called on rank 0 after every optimizer step (to measure
    along the way; it must leave the model in training mode). With ``config.holdout`` a share of the
    rows is held out and the model kept is the best epoch's on them (:mod:`.holdout`)."""
    held = None
    if config.validate().holdout:
        if (getattr(data, "streaming", False) and not hasattr(data, "split_holdout")) or world_size()[1] > 1:
            raise ValueError("holdout (early stopping) needs in-memory data or a mixture with streams in one "
                             "process, not torchrun")
        data, held = split_holdout(data, config.holdout, config.seed)
    run = _set_up(model, data, config, desc=desc, checkpoint_dir=checkpoint_dir, spec=spec, on_step=on_step)
    resumed_from = _resume(run) if resume and checkpoint_dir is not None else None
    stopper = EarlyStopping(held, config.patience, Path(checkpoint_dir) if checkpoint_dir else None) \
        if held is not None else None
    if stopper is not None:
        stopper.resume(run.history)
    if run.world > 1:
        run.trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[run.device] if run.device.type == "cuda" else None)
    run.log = open(log_path, "a") if log_path and run.rank == 0 else None
    if resumed_from is not None:
        _log_resume(run, resumed_from)
    run.bar = progress_bar(total=run.total, desc=desc, unit="step", enabled=progress and run.rank == 0,
                           initial=run.step)
    run.start = time.perf_counter()
    run.last_good = latest_checkpoint(checkpoint_dir) if checkpoint_dir else None
    try:
        for epoch in range(run.step // run.steps_per_epoch, config.epochs):
            if stopper is not None and stopper.stop(epoch):
                break
            record = _run_epoch(run, epoch)
            _log_epoch(run, record if stopper is None else {**record, **stopper.after_epoch(model, epoch + 1)})
        if stopper is not None:
            stopper.restore(model)
        if checkpoint_dir is not None and run.rank == 0:
            order = run.order if run.order is not None else torch.empty(0, dtype=torch.long)
            save_training_state(checkpoint_dir, run.step, model, spec, run.optimizer, run.scheduler, run.generator,
                                order, config.epochs - 1, run.history)
    finally:
        run.bar.close()
        if run.log:
            run.log.close()
    return run.history


@dataclass
class _Run:
    """What one call of :func:`train` carries from step to step."""

    model: torch.nn.Module
    data: TrainData
    config: TrainConfig
    objective: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator  # the data order and every augmentation, in the same sequence on every rank
    rank: int
    world: int
    device: torch.device
    autocast: object  # bf16 autocast on GPU, a disabled one on CPU
    streaming: bool
    steps_per_epoch: int
    total: int
    desc: str
    checkpoint_dir: Path | None
    spec: ModelSpec | None
    on_step: Callable | None
    trained: torch.nn.Module | None = None  # the model, or its DDP wrapper under torchrun
    step: int = 0  # optimizer steps done
    order: torch.Tensor | None = None  # this epoch's row order
    history: list = field(default_factory=list)
    last_good: Path | None = None
    log: IO[str] | None = None
    bar: object = None
    start: float = 0.0
    images_seen: int = 0
    epoch_images: int = 0  # rows one epoch trains on (all of them, or full batches only)
    prefetched: object = None  # this epoch's batches of LazyImages decoded ahead (a Prefetcher), or None

    @property
    def micro(self) -> int:
        """Rows of one process's micro-batch."""
        return self.config.batch_size // (self.world * self.config.grad_accum)


# --- set-up and resume -------------------------------------------------------------------------------------------

def _set_up(model, data, config: TrainConfig, *, desc, checkpoint_dir, spec, on_step) -> _Run:
    """Check the inputs, seed the generators, build the optimizer and schedule, put the model in
    training mode (channels-last)."""
    config.validate()
    rank, world = world_size()
    if config.batch_size % (world * config.grad_accum):
        raise ValueError(f"batch_size {config.batch_size} must be divisible by processes x grad_accum "
                         f"= {world} x {config.grad_accum}")
    if checkpoint_dir is not None and spec is None:
        raise ValueError("checkpoint_dir needs the model's spec (ModelSpec) to write loadable checkpoints")
    objective = get_objective(config.objective)(config)
    objective.check(model, data)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    streaming = getattr(data, "streaming", False)
    if streaming and data.batch_size != config.batch_size:
        raise ValueError(f"streaming data built for batch {data.batch_size}, training with {config.batch_size}")
    drop_last = streaming or (objective.drop_last and len(data) > config.batch_size)
    steps_per_epoch = len(data) // config.batch_size if drop_last else math.ceil(len(data) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer, scheduler = _optimizer_and_schedule(model, config, total)
    device = next(model.parameters()).device
    model.train().to(memory_format=torch.channels_last)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if config.amp and device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    return _Run(model, data, config, objective, optimizer, scheduler, generator, rank, world, device, autocast,
                streaming, steps_per_epoch, total, desc, checkpoint_dir, spec, on_step, trained=model,
                epoch_images=steps_per_epoch * config.batch_size if drop_last else len(data))


def _optimizer_and_schedule(model, config: TrainConfig, total: int):
    """AdamW (weight decay on matrices only) and the warm-up + cosine schedule over `total` steps."""
    decay, no_decay = _parameter_groups(model)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel is ~30% faster per step on CPU than the per-tensor loop (torch >= 2.4).
    try:
        optimizer = torch.optim.AdamW(groups, lr=config.lr, fused=True)
    except (RuntimeError, TypeError):
        optimizer = torch.optim.AdamW(groups, lr=config.lr)
    warmup = config.warmup_steps if config.warmup_steps is not None else int(config.warmup_fraction * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_with_warmup(s, total, warmup))
    return optimizer, scheduler


def _resume(run: _Run) -> Path | None:
    """Continue from the newest checkpoint in ``run.checkpoint_dir``, if any: weights, optimizer,
    schedule, both generators, step, epoch order and history. Returns that checkpoint (None: none)."""
    found = latest_checkpoint(run.checkpoint_dir)
    if found is None:
        return None
    run.model.load_state_dict(load_file(found / "model.safetensors"))
    state = load_training_state(found)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    run.step, run.order, run.history = int(state["step"]), state["order"], json.loads(state["history"])
    return found


def _log_resume(run: _Run, found: Path) -> None:
    """Say where training resumed (rank 0): a ``resume`` record in the log, a line on stderr."""
    if run.rank != 0:
        return
    if run.log:
        run.log.write(json.dumps({"run": run.desc, "event": "resume", "step": run.step,
                                  "checkpoint": found.name}) + "\n")
        run.log.flush()
    print(f"{run.desc}: resumed from step {run.step} of {run.total} ({found.name})", file=sys.stderr)


# --- one epoch, one step -----------------------------------------------------------------------------------------

def _run_epoch(run: _Run, epoch: int) -> dict:
    """The rest of `epoch` from ``run.step``; its record (mean loss, last lr, seconds so far)."""
    batch_size = run.config.batch_size
    if run.streaming:
        run.order = torch.arange(len(run.data)) % batch_size  # positions within each streamed batch
    elif run.order is None or run.step % run.steps_per_epoch == 0:
        run.order = torch.randperm(len(run.data), generator=run.generator)
    epoch_loss, seen = 0.0, 0
    steps = range(run.step % run.steps_per_epoch, run.steps_per_epoch)
    with _prefetch(run, steps) as run.prefetched:
        for in_epoch in steps:
            rows = run.order[in_epoch * batch_size : (in_epoch + 1) * batch_size]
            value = _train_step(run, epoch, rows)
            epoch_loss += value * len(rows)
            seen += len(rows)
    return {"epoch": epoch + 1, "loss": epoch_loss / max(seen, 1), "lr": run.scheduler.get_last_lr()[0],
            "seconds": round(time.perf_counter() - run.start, 2), "step": run.step,
            "images_seen": (epoch + 1) * run.epoch_images}


def _prefetch(run: _Run, steps: range):
    """This process's rows of each step of `steps`, decoded ahead (LazyImages with ``prefetch`` > 0; else a
    context giving None): the same pixels in the same order, and no random draw, so the generator's
    sequence is an unprefetched run's."""
    images, size = run.data.images, run.config.batch_size
    if run.streaming or not isinstance(images, LazyImages) or not images.prefetch:
        return nullcontext(None)
    rows = (run.order[i * size : (i + 1) * size] for i in steps)
    return images.prefetched(r[torch.arange(run.rank, len(r), run.world)] for r in rows)


def _train_step(run: _Run, epoch: int, rows: torch.Tensor) -> float:
    """One optimizer step on the global batch `rows`; its loss (averaged over processes)."""
    config = run.config
    if run.streaming:
        run.data.fetch(run.step)
    params = augment_params(len(rows), run.generator) if config.augment else None
    run.optimizer.zero_grad(set_to_none=True)
    value = _accumulate_gradients(run, rows, params)
    if not math.isfinite(value):
        where = f"the last good checkpoint is {run.last_good}" if run.last_good else "no checkpoint was written"
        raise TrainingDiverged(f"{run.desc}: loss became {value} at step {run.step + 1} (epoch {epoch + 1}); "
                               f"training stopped, {where}. Try a lower lr or grad_clip.")
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.objective.after_step(run.model)
    run.step += 1
    _after_step(run, epoch, value, len(rows))
    return value


def _accumulate_gradients(run: _Run, rows: torch.Tensor, params) -> float:
    """Forward and backward this process's share of `rows` in ``grad_accum`` micro-batches (gradients
    synchronised on the last one only); the batch loss, averaged over processes."""
    config, world = run.config, run.world
    local = torch.arange(run.rank, len(rows), world)
    decoded = None if run.prefetched is None else run.prefetched.next(rows[local])  # images of rows[local]
    batch_loss = torch.zeros((), device=run.device)
    for m in range(config.grad_accum):
        at = slice(m * run.micro, (m + 1) * run.micro) if len(rows) == config.batch_size else \
            slice(m, None, config.grad_accum)
        part = local[at]
        if len(part) == 0:
            continue
        batch = run.data.batch(rows[part]) if decoded is None else run.data.batch(rows[part], images=decoded[at])
        images = batch["images"]
        if params is not None:
            images = apply_augment(images, params[0][part], params[1][part])
        batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
        batch["images"] = normalize_images(images.to(run.device))
        weight = len(part) / len(local)
        sync = m == config.grad_accum - 1 or world == 1
        with _sync_context(run, sync), run.autocast:
            loss = run.objective.loss(run.trained, batch,
                                      generator=_view_generator(config, run.step, run.rank, m)) * weight
        with _sync_context(run, sync):
            loss.backward()
        batch_loss += loss.detach()
    if world > 1:
        dist.all_reduce(batch_loss)
        batch_loss /= world
    return batch_loss.item()


def _sync_context(run: _Run, sync: bool):
    """DDP's ``no_sync`` (no gradient all-reduce) for a micro-batch that is not the step's last, else
    nothing. A new context each time: ``no_sync()`` can be entered only once."""
    return run.trained.no_sync() if run.world > 1 and not sync else nullcontext()


# --- after a step and an epoch: progress, hooks, log, checkpoints ------------------------------------------------

def _after_step(run: _Run, epoch: int, value: float, n_rows: int) -> None:
    config = run.config
    run.images_seen += n_rows
    run.bar.set_postfix(epoch=epoch + 1, loss=f"{value:.3f}",
                        img_s=f"{run.images_seen / max(time.perf_counter() - run.start, 1e-9):.0f}", refresh=False)
    run.bar.update(1)
    if run.on_step is not None and run.rank == 0:
        run.on_step(run.step, run.model)
    if run.log and config.log_every and run.step % config.log_every == 0:
        run.log.write(json.dumps({"run": run.desc, "step": run.step, "loss": value,
                                  "lr": run.scheduler.get_last_lr()[0]}) + "\n")
    if run.checkpoint_dir is not None and config.checkpoint_every and run.step % config.checkpoint_every == 0 \
            and run.step < run.total:
        if run.rank == 0:
            run.last_good = save_training_state(run.checkpoint_dir, run.step, run.model, run.spec, run.optimizer,
                                                run.scheduler, run.generator, run.order, epoch, run.history)
        if run.world > 1:
            dist.barrier()


def _log_epoch(run: _Run, record: dict) -> None:
    run.history.append(record)
    if run.log:
        run.log.write(json.dumps({"run": run.desc, **record}) + "\n")
        run.log.flush()


def _view_generator(config: TrainConfig, step: int, rank: int, micro: int) -> torch.Generator:
    """Generator for an objective's own random draws (simclr's views) at one step: seeded by the
    step, so it is reproducible on resume and leaves the loop's generator in step across ranks."""
    return torch.Generator().manual_seed(((config.seed * 1_000_003 + step) * 1_009 + rank) * 17 + micro)


def _parameter_groups(model):
    """Weight decay on matrices and kernels only (not biases, norms, embeddings' scale)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and "embedding" not in name else no_decay).append(param)
    return decay, no_decay
