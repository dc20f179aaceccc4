"""The run skeleton every training stage shares: ``train-classifiers``, ``pretrain`` and
each ``finetune`` task (``doll.finetuning.tasks``) are a ``Stage`` that overrides hooks.

``Stage.run`` does, in this order and nowhere else:

1. join torchrun's process group (``dist.init``) before any file is written;
2. ``prepare``: the checks and the data, before ``--out`` is touched (a bad option or a
   bad data set leaves no empty folder);
3. on the main process, ``--out`` made or claimed (``prepare_out_dir``: ``--resume`` /
   ``--overwrite``, the ``.doll-files`` manifest, the lock, the inputs' fingerprints) and
   ``config.json`` written (the settings and what ``config`` adds); every process waits;
4. ``train``: the networks, seeds or members; it returns the metrics;
5. ``metrics.json`` (with ``seconds``) written last by the main process: the marker of a
   finished run, which ``--resume`` and ``doll study`` look for.

A variant overrides ``prepare`` and ``train`` (and ``inputs`` / ``config`` where it reads or
records more); nnU-Net's trainer is the model.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from doll.train import distributed as dist
from doll.utils import prepare_out_dir, resolve_device, write_json


class Stage:
    """One command's run: override the hooks, call ``run(settings)``."""

    command = ""  # the command name recorded in config.json / metrics.json ("finetune", ...)
    run_config = True  # False where the network's own config.json lies in --out (pretrain: run.command there)

    def inputs(self, s) -> dict:
        """The inputs the run reads, as {flag: path or None}: ``--out`` may not be, hold or lie
        inside one, and ``--resume`` compares their fingerprints."""
        return {}

    def prepare(self, s, device) -> Any:
        """Checks and data (decoded images, label files), before anything is written; what it
        returns is passed to ``config`` and ``train``."""
        return None

    def config(self, s, prepared) -> dict:
        """What config.json records beyond the settings."""
        return {}

    def train(self, s, prepared, out: Path) -> dict:
        """Train and score; the metrics to write (``seconds`` is added when absent)."""
        raise NotImplementedError

    def run(self, s) -> dict:
        device = dist.init(resolve_device(s.device))  # before any file is written
        t0 = time.time()
        prepared = self.prepare(s, device)
        out = Path(s.out)
        if dist.is_main():
            out = prepare_out_dir(out, resume=s.resume, overwrite=s.overwrite, settings=asdict(s),
                                  command=self.command, inputs=self.inputs(s))
            if self.run_config:
                write_json(out / "config.json", {"command": self.command, **asdict(s), **self.config(s, prepared)})
        dist.barrier()
        result = self.train(s, prepared, out)
        result.setdefault("seconds", round(time.time() - t0, 2))
        if dist.is_main():
            write_json(out / "metrics.json", result)
        return result
