"""The one training engine used by train-classifiers, pretrain and finetune.

* AMP on CUDA (bf16 where supported, else fp16 with a gradient scaler), channels_last;
* the budget is in optimiser steps: ``max_steps``, or ``epochs`` x the steps of one epoch
  (the same number either way, so the two describe one budget); the learning-rate
  schedule (linear warm-up, cosine decay), evaluation and early stopping count steps;
* gradient accumulation, AdamW;
* evaluation and a checkpoint every ``val_every`` steps (default: about ``EVALUATIONS``
  per run) and at the last step; early stopping after ``patience`` evaluations without
  improvement of the monitored metric. Evaluating never changes the training: it runs
  outside the training's random-number stream, as does the creation of the data loaders;
* files: ``last.pt`` (weights, optimiser, scheduler, scaler, step, RNG, history) at every
  evaluation, read back with ``torch.load(weights_only=True)``; the best weights so far in
  ``best.safetensors``; only when the budget is spent (or early stopping ends the run)
  ``model.safetensors`` + ``config.json``, then ``metrics.json`` with ``"finished": true``:
  a killed run leaves no weights under the name the next stage reads. Every file is
  written atomically;
* ``resume=True`` continues from ``last.pt``, in the middle of an epoch too: the data
  order and augmentation depend only on (seed, epoch), so a resumed run ends where an
  uninterrupted one would;
* torchrun: DistributedSampler with set_epoch, DDP, outputs gathered from all ranks
  for the metrics, only rank 0 writes files.

An *objective* (``doll.train.objectives``; the argument is named ``task``) tells the engine
what a batch means::

    task.loss(model, batch) -> scalar tensor
    task.predict(model, batch) -> dict of per-sample numpy arrays
    task.metrics(outputs) -> dict of floats (outputs: the predict arrays of the whole split)
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from doll.data.dataset import decode_masks
from doll.errors import DollError
from doll.models.checkpoint import (
    MODEL_FILE,
    load_train_state,
    restore_model,
    restore_train_state,
    save_model,
    save_train_state,
    save_weights,
    unwrap,
)
from doll.schema import read_run_metrics
from doll.train import distributed as dist
from doll.utils import check_positive, resolve_device, write_json

LAST = "last.pt"
BEST = "best.safetensors"
EVALUATIONS = 10  # evaluations per run when --val-every is not given


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
    patience: int = 0  # early stopping after this many evaluations without improvement (0: off)
    monitor: str = "val_loss"
    monitor_mode: str = "min"  # "min" or "max"
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    amp: bool = True
    progress: bool = True
    eval_split: str = "val"  # what the evaluation set is, for the log lines: "test" where it is the test split


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
    """The batch on ``device``; coded masks (pretraining's, 1 byte a pixel) become float32 there."""
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device, non_blocking=True)
            if channels_last and v.ndim == 4 and k == "image":
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return decode_masks(out)


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
                 checkpoint_config: dict, extra_config: dict | None = None, lr_scales: dict[str, float] | None = None):
        """``lr_scales``: parameter name -> multiplier of the learning rate (e.g. a lower rate for
        pretrained layers); parameters not named train at ``settings.lr``."""
        check_positive(epochs=settings.epochs, batch_size=settings.batch_size, accumulate=settings.accumulate, lr=settings.lr)
        if settings.max_steps < 0 or settings.val_every < 0:
            raise DollError("--max-steps and --val-every must be positive (0: derive them)")
        self.s = settings
        self.task = task
        self.lr_scales = dict(lr_scales or {})
        if any(not v > 0 for v in self.lr_scales.values()):
            raise DollError("learning-rate multipliers must be positive")
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
        # every trainable weight must get a gradient each step, or DDP stalls (build_segmenter freezes the
        # encoder stages smp's PSPNet keeps but never runs)
        return torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def _param_groups(self) -> list[dict]:
        """The trainable parameters, one optimiser group per learning-rate multiplier (in a
        fixed order, so that a resumed run's optimiser state matches its groups)."""
        groups: dict[float, list] = {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                groups.setdefault(self.lr_scales.get(name, 1.0), []).append(p)
        if not groups:
            raise DollError("nothing to train: every weight is frozen")
        return [{"params": ps, "lr": self.s.lr * scale} for scale, ps in sorted(groups.items(), reverse=True)]

    def budget(self, n_train: int) -> tuple[int, int, int]:
        """(optimiser steps per epoch, total steps, steps between evaluations) for ``n_train`` images."""
        s = self.s
        ws = dist.world_size() if dist.active() else 1
        steps_per_epoch = math.ceil(batches_per_epoch(n_train, s.batch_size, ws) / s.accumulate)  # a last, partial group also steps
        total = s.max_steps or steps_per_epoch * s.epochs
        return steps_per_epoch, total, s.val_every or max(1, math.ceil(total / EVALUATIONS))

    def fit(self, train_set, val_set, resume: bool = False) -> dict:
        s, out = self.s, self.out
        metrics_file = out / "metrics.json"
        # checked (doll.schema): a damaged metrics.json is one error, not a run resumed or reported from garbage
        earlier = read_run_metrics(metrics_file) if resume and metrics_file.exists() else {}
        if earlier.get("finished"):
            return self._finished(earlier)
        ws = dist.world_size() if dist.active() else 1
        sampler = DistributedSampler(train_set, num_replicas=ws, rank=dist.rank() if ws > 1 else 0,
                                     shuffle=True, seed=s.seed, drop_last=False)
        drop_last = len(train_set) > s.batch_size * ws
        n_batches = batches_per_epoch(len(train_set), s.batch_size, ws)
        if n_batches == 0:
            raise DollError(f"no training batches: {len(train_set)} images with --batch-size {s.batch_size}")
        steps_per_epoch, total, val_every = self.budget(len(train_set))
        opt = torch.optim.AdamW(self._param_groups(), lr=s.lr, weight_decay=s.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, max(1, int(s.warmup * total))))
        state = {"step": 0, "epoch": 0, "batch": 0, "images_seen": 0, "history": [], "best": None, "best_step": -1,
                 "bad_evals": 0, "train_seconds": 0.0, "eval_seconds": 0.0, "max_steps": total}
        torch.manual_seed(s.seed)
        random.seed(s.seed)
        if resume and (out / LAST).exists():
            state = self._resume(opt, sched, steps_per_epoch, total, n_batches)
        model = self._ddp()
        start = time.time()
        main = dist.is_main()
        self._warned = False
        if s.progress and main:  # the budget up front; the bar then shows the time left
            tqdm.write(f"[{out.name}] budget: {total} optimiser steps of {s.batch_size * s.accumulate} images "
                       f"({total / max(steps_per_epoch, 1):.1f} epochs of {len(train_set)}), evaluation every "
                       f"{val_every} steps" + (f", resuming at step {state['step']}" if state["step"] else ""))
        bar = tqdm(total=total, initial=state["step"], desc=f"training {out.name}", unit="step", leave=False,
                   disable=not (s.progress and main))
        running, count = 0.0, 0  # the training loss since the last evaluation
        stop = False
        while state["step"] < total and not stop:
            epoch, skip = state["epoch"], state["batch"]
            sampler.set_epoch(epoch)
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            order = list(sampler)[skip * s.batch_size:]  # resumed in the middle of an epoch: its batches not yet seen
            loader = DataLoader(train_set, batch_size=s.batch_size, sampler=order, num_workers=s.num_workers,
                                pin_memory=self.device.type == "cuda", drop_last=drop_last)
            with torch.random.fork_rng(devices=[]):  # creating the iterator draws a seed: not from training's stream
                batches = iter(loader)
            model.train()
            opt.zero_grad(set_to_none=True)
            t0 = time.time()
            for i, batch in enumerate(batches, start=skip):
                batch = _to_device(batch, self.device, self.channels_last)
                with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                    loss = self.task.loss(model, batch)
                if not torch.isfinite(loss):
                    raise DollError(f"training diverged (loss {loss.item()}) at step {state['step'] + 1}; lower --lr")
                self.scaler.scale(loss / s.accumulate).backward()
                running += loss.item() * len(batch["index"])
                count += len(batch["index"])
                state["images_seen"] += len(batch["index"]) * ws
                state["batch"] = i + 1
                if not ((i + 1) % s.accumulate == 0 or i + 1 == n_batches):
                    continue
                self.scaler.step(opt)
                self.scaler.update()
                opt.zero_grad(set_to_none=True)
                if sched.last_epoch < total:
                    sched.step()
                state["step"] += 1
                bar.update(1)
                if i + 1 == n_batches:
                    state["epoch"], state["batch"] = epoch + 1, 0
                if state["step"] % val_every == 0 or state["step"] == total:
                    state["train_seconds"] += time.time() - t0
                    stop = self._evaluate(model, val_set, state, opt, sched, running, count, steps_per_epoch)
                    running, count = 0.0, 0
                    model.train()
                    t0 = time.time()
                if stop or state["step"] >= total:
                    break
            else:
                state["train_seconds"] += time.time() - t0
            if state["batch"] == n_batches:  # an epoch whose last batch ended a group mid-way
                state["epoch"], state["batch"] = epoch + 1, 0
        bar.close()
        if main:
            self._finish(state)
        metrics = self._metrics(state, True)
        metrics["process_seconds"] = round(time.time() - start, 3)
        if main:
            write_json(metrics_file, metrics)
        dist.barrier()
        return metrics

    def _finished(self, metrics: dict) -> dict:
        """--resume of a finished fit: the model as the fit left it (the last step's weights), its
        metrics (``metrics``: metrics.json, checked)."""
        last = self.out / LAST
        if last.exists():
            ck = load_train_state(last)
            restore_model(self.model, ck, last)
            if "step" in ck["state"]:  # a state saved by a doll that counted epochs: its metrics.json
                return self._metrics(ck["state"], True)  # metrics.json may since hold the calling stage's result
        return metrics

    def _resume(self, opt, sched, steps_per_epoch: int, total: int, n_batches: int) -> dict:
        """Weights, optimiser, schedule, scaler and random streams from last.pt; its training state."""
        last = self.out / LAST
        ck = load_train_state(last)  # checked: keys, types, progress (doll.schema)
        restore_train_state(ck, last, self.model, opt, sched, self.scaler if self.scaler.is_enabled() else None)
        if torch.is_tensor(ck.get("rng_cuda")) and ck["rng_cuda"].numel() and self.device.type == "cuda":
            torch.cuda.set_rng_state(ck["rng_cuda"], self.device)  # dropout on this rank's GPU draws from it
        random.setstate(ck["rng_python"])
        state = _upgrade_state(ck["state"], steps_per_epoch, total)
        if state["max_steps"] != total:
            raise DollError(f"{self.out} was started with a budget of {state['max_steps']} steps, this command asks "
                            f"for {total}; resume with the same --epochs / --max-steps / --batch-size")
        if state["batch"] >= n_batches:  # a position no epoch of this run has: resuming there would never end
            raise DollError(f"{last}: state.batch is {state['batch']}; expected fewer than the {n_batches} "
                            "batches of an epoch, resume with the first run's --batch-size or start again with "
                            "--overwrite")
        return state

    def _evaluate(self, model, val_set, state, opt, sched, running, count, steps_per_epoch) -> bool:
        """Score the validation split, keep the best weights, checkpoint; whether to stop early."""
        s, out, main = self.s, self.out, dist.is_main()
        t0 = time.time()
        train_loss = torch.tensor([running, count], dtype=torch.float64, device=self.device)  # NCCL needs CUDA
        if dist.active():
            torch.distributed.all_reduce(train_loss)
        row = {"step": state["step"], "epoch": round(state["step"] / steps_per_epoch, 3),
               "images_seen": state["images_seen"], "train_loss": float(train_loss[0] / max(train_loss[1], 1)),
               "lr": opt.param_groups[0]["lr"]}
        if val_set is not None and len(val_set):
            with torch.random.fork_rng(devices=[]):  # scoring draws nothing from the training's stream
                outputs = predict_all(unwrap(model), self.task, val_set, s.batch_size, self.device, s.num_workers)
            row.update({f"val_{k}": v for k, v in self.task.metrics(outputs).items()})
        value = row.get(s.monitor, row["train_loss"])
        defined = value is not None and not math.isnan(value)
        best = state["best"]
        best_defined = best is not None and math.isfinite(best)
        if not defined:  # e.g. AUROC on a validation split where no class has positives and negatives
            better = not best_defined  # nothing to compare yet: keep the latest weights, no early stop
            if main and not self._warned:
                tqdm.write(f"[{out.name}] warning: {s.monitor} is undefined at step {state['step']}; until it is "
                           "defined the latest weights are kept")
                self._warned = True
        else:
            better = not best_defined or (value > best if s.monitor_mode == "max" else value < best)
        if better:
            state.update(best=value if defined else None, best_step=state["step"], bad_evals=0)
            if main and s.monitor != "step":  # monitoring the step keeps the last weights: written once, at the end
                save_weights(out / BEST, self.model)
        else:
            state["bad_evals"] += 1
        state["eval_seconds"] += time.time() - t0
        row["seconds"] = round(state["train_seconds"] + state["eval_seconds"], 3)
        state["history"].append(row)
        stop = s.patience > 0 and state["bad_evals"] >= s.patience
        if main:
            save_train_state(out / LAST, {
                "model": unwrap(self.model).state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "scaler": self.scaler.state_dict(),
                "rng_torch": torch.get_rng_state(), "rng_python": random.getstate(), "state": state,
                "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
                else torch.zeros(0, dtype=torch.uint8)})
            write_json(out / "metrics.json", self._metrics(state, False))
            shown = "  ".join(f"{k.replace('val_', s.eval_split + '_', 1)} {v:.4f}" for k, v in row.items()
                              if isinstance(v, float) and k not in ("lr", "epoch", "seconds"))
            tqdm.write(f"[{out.name}] step {state['step']}/{state['max_steps']}  {shown}")
            if stop:
                tqdm.write(f"[{out.name}] early stop: {s.monitor} did not improve for {s.patience} evaluations")
        dist.barrier()
        return stop

    def _finish(self, state: dict) -> None:
        """The result under the names the next stage reads: the best weights as model.safetensors + config.json."""
        out = self.out
        if self.s.monitor == "step":
            save_weights(out / MODEL_FILE, self.model)
        elif (out / BEST).exists():
            os.replace(out / BEST, out / MODEL_FILE)
        elif not (out / MODEL_FILE).exists():
            save_weights(out / MODEL_FILE, self.model)
        best_row = next((r for r in state["history"] if r.get("step") == state["best_step"]), {})
        save_model(out, None, {**self.checkpoint_config, "step": state["best_step"], "epoch": best_row.get("epoch"),
                               "settings": asdict(self.s)}, self.extra_config)

    def _metrics(self, state: dict, finished: bool) -> dict:
        best_row = next((r for r in state["history"] if r.get("step") == state["best_step"]), {})
        return {"finished": finished, "steps": state["step"], "max_steps": state["max_steps"],
                "images_seen": state["images_seen"], "epochs_run": state["history"][-1]["epoch"] if state["history"] else 0,
                "best_step": state["best_step"], "best_epoch": best_row.get("epoch", -1),
                "train_seconds": round(state["train_seconds"], 3), "eval_seconds": round(state["eval_seconds"], 3),
                "monitor": self.s.monitor, "best": best_row, "history": state["history"]}


def _upgrade_state(state: dict, steps_per_epoch: int, total: int) -> dict:
    """A training state saved by a doll that counted epochs: the same point in steps."""
    if "step" in state:
        return state
    step = state["epoch"] * steps_per_epoch
    history = [{**r, "step": r["epoch"] * steps_per_epoch} for r in state["history"]]
    best_step = state["best_epoch"] * steps_per_epoch if state.get("best_epoch", -1) > 0 else -1
    return {"step": step, "epoch": state["epoch"], "batch": 0, "images_seen": 0, "history": history,
            "best": state.get("best"), "best_step": best_step, "bad_evals": state.get("bad_epochs", 0),
            "train_seconds": 0.0, "eval_seconds": 0.0, "max_steps": total}
