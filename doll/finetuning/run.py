"""``doll finetune``: the checked settings handed to the ``--task``'s runner
(``doll.finetuning.tasks``: the registry, and ``package.module:ClassName`` for a task of
one's own)."""
from __future__ import annotations

from doll.finetuning.settings import FinetuneSettings, check_settings
from doll.finetuning.tasks import task_class
from doll.outputs import releases_outputs
from doll.utils import resolve_paths


@releases_outputs
def finetune(settings: FinetuneSettings | None = None, **kwargs) -> dict:
    s = settings or FinetuneSettings(**kwargs)
    runner = task_class(s.task)
    resolve_paths(s, "root", "init")
    check_settings(s)
    return runner().run(s)
