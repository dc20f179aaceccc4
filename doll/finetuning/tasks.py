"""Stage 4's tasks: the ``--task`` registry and the ``TaskRunner`` every task subclasses.

A task is a :class:`doll.train.stage.Stage` (the run skeleton: process group, checks and
data before ``--out`` is touched, config.json, metrics.json) that declares its default
budget and the task-only options it reads. A new task is one module with a subclass and
one row in ``TASKS``; or, without changing doll, ``--task package.module:ClassName``
(docs/extending.md), loaded like ``--dataset`` and ``--method`` take a user's class."""
from __future__ import annotations

from dataclasses import fields

from doll.errors import DollError
from doll.finetuning.options import FinetuneSettings
from doll.train.stage import Stage
from doll.utils import registered_class

TASKS = {
    "jsrt": "doll.finetuning.segment:Segment",
    "lung": "doll.finetuning.segment:Segment",
    "covid": "doll.finetuning.segment:Segment",
    "seg4cls": "doll.finetuning.seg4cls.run:Seg4Cls",
    "mixed": "doll.finetuning.mixed:Mixed",
}

# the options that only some tasks read, with their flags: a task lists those it reads in
# ``reads``; one set away from its default for a task that does not read it is refused
TASK_OPTIONS = {"summarizer": "--summarizer", "pseudo": "--pseudo / --boosted", "baselines": "--no-baselines",
                "pooling": "--pooling", "pretrained_lr": "--pretrained-lr"}


def finetune_inputs(s: FinetuneSettings) -> dict:
    """The inputs a fine-tuning run reads, which its --out may not be, hold or lie inside,
    and which --resume fingerprints: the data set and the --init folder or weights file."""
    return {"--root": s.root, "--init": None if s.init == "random" else s.init}


class TaskRunner(Stage):
    """One ``--task``. Override ``prepare`` (checks and data, before anything is written),
    ``train`` (returns the metrics) and, where it records more, ``config``; ``run`` (the
    skeleton) gets settings already checked by ``doll.finetuning.settings.check_settings``."""

    command = "finetune"
    default_steps = 0  # the budget without --epochs / --max-steps: optimiser steps, ...
    default_epochs = 20  # ... else epochs
    reads: tuple[str, ...] = ()  # the TASK_OPTIONS fields this task reads

    def inputs(self, s: FinetuneSettings) -> dict:
        return finetune_inputs(s)


def task_class(task: str) -> type[TaskRunner]:
    """The class of ``--task``: a row of ``TASKS`` or a user's ``package.module:ClassName``."""
    return registered_class(task, TASKS, TaskRunner, "--task",
                            f"unknown --task {task!r}; choose one of {', '.join(TASKS)} or a TaskRunner subclass of "
                            "your own as package.module:ClassName")


def check_task_options(s: FinetuneSettings, runner: type[TaskRunner]) -> None:
    """Refuse a task-only option set for a task that would ignore it."""
    defaults = {f.name: f.default for f in fields(FinetuneSettings)}
    for name, flag in TASK_OPTIONS.items():
        if getattr(s, name) != defaults[name] and name not in runner.reads:
            tasks = [t for t in TASKS if name in task_class(t).reads]
            raise DollError(f"{flag} applies to --task {' / '.join(tasks)} only, not --task {s.task}")
