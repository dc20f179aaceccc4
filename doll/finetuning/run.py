"""``doll finetune``: one table of tasks, each a ``TaskRunner`` in its own module.

A new task is one module with a ``TaskRunner`` subclass plus one row here (loaded with
``doll.utils.load_class``, the loader of every built-in registry)."""
from __future__ import annotations

from doll.errors import DollError
from doll.finetuning.settings import FinetuneSettings, TaskRunner, check_settings
from doll.outputs import releases_outputs
from doll.utils import load_class, resolve_paths

TASKS = {
    "jsrt": "doll.finetuning.segment:Segment",
    "lung": "doll.finetuning.segment:Segment",
    "covid": "doll.finetuning.segment:Segment",
    "seg4cls": "doll.finetuning.seg4cls.run:Seg4Cls",
    "mixed": "doll.finetuning.mixed:Mixed",
}


@releases_outputs
def finetune(settings: FinetuneSettings | None = None, **kwargs) -> dict:
    s = settings or FinetuneSettings(**kwargs)
    if s.task not in TASKS:
        raise DollError(f"unknown --task {s.task!r}; choose one of {', '.join(TASKS)}")
    resolve_paths(s, "root", "init")
    check_settings(s)
    return load_class(TASKS[s.task], TaskRunner, "--task")().run(s)
