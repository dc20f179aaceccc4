"""The one training engine used by train-classifiers, pretrain and finetune.

* AMP on CUDA (bf16 where supported, else fp16 with a gradient scaler), channels_last;
* gradient accumulation, AdamW, linear warm-up then cosine decay per optimiser step;
* validation every epoch, early stopping on a monitored metric;
* checkpoints: the best weights as ``model.safetensors`` + ``config.json`` in ``out``,
  and ``last.pt`` (weights, optimiser, scheduler, scaler, epoch, RNG, history) read
  back with ``torch.load(weights_only=True)``; every file written atomically;
* ``resume=True`` continues from ``last.pt``: the data order and augmentation depend
  only on (seed, epoch), so a resumed run ends where an uninterrupted one would;
* torchrun: DistributedSampler with set_epoch, DDP, outputs gathered from all ranks
  for the metrics, only rank 0 writes files.

A *task* tells the engine what a batch means::

    task.loss(model, batch) -> scalar tensor
    task.predict(model, batch) -> dict of per-sample numpy arrays
    task.metrics(outputs) -> dict of floats (outputs: the predict arrays of the whole split)
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from doll.errors import DollError
from doll.models.checkpoint import (
    load_train_state,
    save_model,
    save_train_state,
    unwrap,
)
from doll.train import distributed as dist
from doll.utils import check_positive, read_json, resolve_device, write_json

LAST = "last.pt"


@dataclass
class EngineSettings:
    epochs: int = 5
    max_steps: int = 0  # the budget in optimiser steps (0: epochs' worth)
    val_every: int = 0  # optimiser steps between evaluations (0: about ten per run)
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: float = 0.1  # fraction of all optimiser steps spent warming up
    accumulate: int = 1  # gradient accumulation steps
    patience: int = 0  # early stopping after this many epochs without improvement (0: off)
    monitor: str = "val_loss"
    monitor_mode: str = "min"  # "min" or "max"
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    amp: bool = True
    progress: bool = True


def amp_dtype(device: torch.device):
    if device.type != "cuda":
        return None
    try:  # a GPU without bf16 units (before Ampere) "supports" it by emulation, slowly: use fp16 there
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.3 has no including_emulation and reports native support only
        native = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if native else torch.float16


def _lr_lambda(total_steps: int, warmup_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def batches_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    """Batches each rank's training loader yields per epoch in ``Engine.fit`` (its sampler
    pads to ``ceil(n / world)`` per rank; the last partial batch is dropped when there is
    more than one batch in all)."""
    per_rank = math.ceil(n / world)
    return per_rank // batch_size if n > batch_size * world else math.ceil(per_rank / batch_size)


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device, non_blocking=True)
            if channels_last and v.ndim == 4 and k == "image":
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def predict_all(model, task, dataset, batch_size: int, device: torch.device, num_workers: int = 0,
                progress: bool = False, desc: str = "evaluating") -> dict[str, np.ndarray]:
    """Run ``task.predict`` over ``dataset`` (sharded across ranks under torchrun), in dataset order."""
    ws = max(1, dist.world_size()) if dist.active() else 1
    sampler = DistributedSampler(dataset, num_replicas=ws, rank=dist.rank() if ws > 1 else 0, shuffle=False)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)
    dtype = amp_dtype(device)
    parts: dict[str, list] = {}
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for batch in tqdm(loader, desc=desc, leave=False, disable=not (progress and dist.is_main())):
            batch = _to_device(batch, device, device.type == "cuda")
            out = task.predict(model, batch)
            out["index"] = batch["index"].cpu().numpy()
            for k, v in out.items():
                parts.setdefault(k, []).append(np.asarray(v))
    local = {k: np.concatenate(v) for k, v in parts.items()}
    gathered = dist.gather_objects(local)
    merged = {k: np.concatenate([g[k] for g in gathered]) for k in local}
    _, first = np.unique(merged["index"], return_index=True)  # drop the sampler's padding
    return {k: v[first] for k, v in merged.items()}


class Engine:
    def __init__(self, model: torch.nn.Module, task, settings: EngineSettings, out: str | Path,
                 checkpoint_config: dict, extra_config: dict | None = None):
        check_positive(epochs=settings.epochs, batch_size=settings.batch_size, accumulate=settings.accumulate, lr=settings.lr)
        if settings.max_steps or settings.val_every:
            raise DollError("step budgets (max_steps, val_every) are not implemented yet")
        self.s = settings
        self.task = task
        self.out = Path(out)
        self.checkpoint_config = checkpoint_config
        self.extra_config = extra_config
        self.device = dist.init(resolve_device(settings.device))
        self.channels_last = self.device.type == "cuda"
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.dtype = amp_dtype(self.device) if settings.amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def _ddp(self):
        if not dist.active():
            return self.model
        ids = [self.device.index] if self.device.type == "cuda" else None
        # every trainable weight must get a gradient each step, or DDP stalls (build_pspnet freezes the
        # encoder stages smp's PSPNet keeps but never runs)
        return torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def fit(self, train_set, val_set, resume: bool = False) -> dict:
        s, out = self.s, self.out
        metrics_file = out / "metrics.json"
        if resume and metrics_file.exists() and read_json(metrics_file).get("finished"):
            if (out / LAST).exists():  # leave the model as a finished fit leaves it: the last epoch's weights
                ck = load_train_state(out / LAST)
                unwrap(self.model).load_state_dict(ck["model"])
                return self._metrics(ck["state"], True)  # metrics.json may since hold the calling stage's result
            return read_json(metrics_file)
        ws = dist.world_size() if dist.active() else 1
        sampler = DistributedSampler(train_set, num_replicas=ws, rank=dist.rank() if ws > 1 else 0,
                                     shuffle=True, seed=s.seed, drop_last=False)
        loader = DataLoader(train_set, batch_size=s.batch_size, sampler=sampler, num_workers=s.num_workers,
                            pin_memory=self.device.type == "cuda", drop_last=len(train_set) > s.batch_size * ws)
        assert len(loader) == batches_per_epoch(len(train_set), s.batch_size, ws)
        if len(loader) == 0:
            raise DollError(f"no training batches: {len(train_set)} images with --batch-size {s.batch_size}")
        steps_per_epoch = math.ceil(len(loader) / s.accumulate)  # a last, partial group also steps
        total = steps_per_epoch * s.epochs
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise DollError("nothing to train: every weight is frozen")
        opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, max(1, int(s.warmup * total))))
        state = {"epoch": 0, "history": [], "best": None, "best_epoch": -1, "bad_epochs": 0}
        torch.manual_seed(s.seed)
        random.seed(s.seed)
        if resume and (out / LAST).exists():
            ck = load_train_state(out / LAST)
            unwrap(self.model).load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            if ck["scaler"] and self.scaler.is_enabled():  # empty when saved by a run without fp16
                self.scaler.load_state_dict(ck["scaler"])
            torch.set_rng_state(ck["rng_torch"])
            if torch.is_tensor(ck.get("rng_cuda")) and ck["rng_cuda"].numel() and self.device.type == "cuda":
                torch.cuda.set_rng_state(ck["rng_cuda"], self.device)  # dropout on this rank's GPU draws from it
            random.setstate(ck["rng_python"])
            state = ck["state"]
        model = self._ddp()
        start = time.time()
        main = dist.is_main()
        warned = False
        for epoch in range(state["epoch"], s.epochs):
            t0 = time.time()
            sampler.set_epoch(epoch)
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            model.train()
            running, count = 0.0, 0
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{s.epochs}", leave=False, disable=not (s.progress and main))
            opt.zero_grad(set_to_none=True)
            for i, batch in enumerate(bar):
                batch = _to_device(batch, self.device, self.channels_last)
                with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                    loss = self.task.loss(model, batch)
                if not torch.isfinite(loss):
                    raise DollError(f"training diverged (loss {loss.item()}) at epoch {epoch + 1}; lower --lr")
                self.scaler.scale(loss / s.accumulate).backward()
                if (i + 1) % s.accumulate == 0 or i + 1 == len(loader):
                    self.scaler.step(opt)
                    self.scaler.update()
                    opt.zero_grad(set_to_none=True)
                    if sched.last_epoch < total:
                        sched.step()
                running += loss.item() * len(batch["index"])
                count += len(batch["index"])
                bar.set_postfix(loss=f"{running / count:.4f}")
            train_loss = torch.tensor([running, count], dtype=torch.float64, device=self.device)  # NCCL needs CUDA
            if dist.active():
                torch.distributed.all_reduce(train_loss)
            row = {"epoch": epoch + 1, "train_loss": float(train_loss[0] / train_loss[1]), "lr": opt.param_groups[0]["lr"]}
            if val_set is not None and len(val_set):
                outputs = predict_all(unwrap(model), self.task, val_set, s.batch_size, self.device, s.num_workers)
                row.update({f"val_{k}": v for k, v in self.task.metrics(outputs).items()})
            row["seconds"] = round(time.time() - t0, 3)
            state["history"].append(row)
            value = row.get(s.monitor, row["train_loss"])
            defined = value is not None and not math.isnan(value)
            best = state["best"]
            best_defined = best is not None and math.isfinite(best)
            if not defined:  # e.g. AUROC on a validation split where no class has positives and negatives
                better = not best_defined  # nothing to compare yet: keep the latest epoch, no early stop
                if main and not warned:
                    tqdm.write(f"[{out.name}] warning: {s.monitor} is undefined at epoch {epoch + 1}; until it is "
                               "defined the latest epoch is kept")
                    warned = True
            else:
                better = not best_defined or (value > best if s.monitor_mode == "max" else value < best)
            if better:
                state.update(best=value if defined else None, best_epoch=epoch + 1, bad_epochs=0)
                if main:
                    save_model(out, self.model, {**self.checkpoint_config, "epoch": epoch + 1,
                                                 "settings": asdict(s)}, self.extra_config)
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch + 1
            stop = s.patience > 0 and state["bad_epochs"] >= s.patience
            if main:
                save_train_state(out / LAST, {
                    "model": unwrap(self.model).state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "scaler": self.scaler.state_dict(),
                    "rng_torch": torch.get_rng_state(), "rng_python": random.getstate(), "state": state,
                    "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
                    else torch.zeros(0, dtype=torch.uint8)})
                write_json(metrics_file, self._metrics(state, False))
                shown = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float) and k != "lr")
                tqdm.write(f"[{out.name}] epoch {epoch + 1}/{s.epochs}  {shown}")
            dist.barrier()
            if stop:
                if main:
                    tqdm.write(f"[{out.name}] early stop: {s.monitor} did not improve for {s.patience} epochs")
                break
        metrics = self._metrics(state, True)
        metrics["train_seconds"] = round(time.time() - start, 3)
        if main:
            write_json(metrics_file, metrics)
        dist.barrier()
        return metrics

    def _metrics(self, state: dict, finished: bool) -> dict:
        best_row = next((r for r in state["history"] if r["epoch"] == state["best_epoch"]), {})
        return {"finished": finished, "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
                "monitor": self.s.monitor, "best": best_row, "history": state["history"]}
