"""``doll study``: the paired label-efficiency study.

Every cell (init x fraction x seed x mode) is one ``doll.finetune`` call with the same step
budget in ``OUT/cells/<init>_<mode>_f<fraction>_s<seed>/``. The seed draws the mask subset
(``doll.finetuning.settings.label_subset``) and the new layers' initialisation, so the cells of
one seed, mode and fraction trained every init on the same masks: they form a pair. The first
init is the reference unless ``reference`` names another.

A finished cell (its metrics.json trained the whole budget, its config.json holds the cell's
settings) is reused, never retrained; ``resume`` continues a killed study at its next
unfinished cell. Cells run one at a time, or one per device at a time over ``devices``
(threads). Then the study writes ``study.json``, ``summary.md`` and ``report.html``
(``doll.studies.report``).
"""
from __future__ import annotations

import json
import queue
import sys
import threading
import time
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from doll.errors import DollError
from doll.finetuning.run import finetune
from doll.finetuning.segment import Segment
from doll.finetuning.settings import FinetuneSettings, check_settings, init_is_folder
from doll.finetuning.tasks import task_class
from doll.models.adapters import MODES
from doll.models.segmenter import DEFAULT_DECODER, DEFAULT_ENCODER
from doll.outputs import is_doll_output, releases_outputs, safe_name
from doll.schema import read_run_metrics
from doll.studies import report as study_report
from doll.studies import summary
from doll.studies.options import StudySettings
from doll.utils import RUN_ONLY_SETTINGS, check_positive, differing_keys, prepare_out_dir, read_run_config, \
    resolve_paths, write_json

# the settings every cell shares: --resume refuses a study whose cells would differ in one.
# The grid (inits, fractions, seeds, modes) may grow on --resume: new cells are added.
SHARED = ("task", "dataset", "root", "fold", "max_steps", "val_every", "decoder", "encoder", "image_size",
          "batch_size", "lr", "seed", "transfer", "pretrained_lr")


@dataclass
class Init:
    name: str  # in folder names and tables
    spec: str  # random | imagenet:FILE | a folder


@dataclass
class Cell:
    name: str
    init: Init
    mode: str
    fraction: float
    seed: int

    def describe(self) -> dict:
        return {"name": self.name, "init": self.init.name, "init_spec": self.init.spec, "mode": self.mode,
                "fraction": self.fraction, "seed": self.seed}


def _items(text: str) -> list[str]:
    return [v.strip() for v in str(text).split(",") if v.strip()]


def parse_inits(text: str) -> list[Init]:
    """``random``, ``imagenet:FILE``, a folder (named by its last component) or ``NAME=`` any of these."""
    inits = []
    for item in _items(text):
        name, eq, spec = item.partition("=")
        if not eq or ":" in name or "/" in name:
            name, spec = "", item
        if not name:
            name = "random" if spec == "random" else "imagenet" if spec.startswith("imagenet:") else \
                Path(spec.rstrip("/")).name
        if not spec or safe_name(name) != name:
            raise DollError(f"--inits {item}: expected random, imagenet:FILE, a `doll pretrain` folder or NAME=any of "
                            "these (NAME: letters, digits, . _ -)")
        inits.append(Init(name, spec))
    if not inits:
        raise DollError("--inits names no init; e.g. --inits random,runs/pretrain")
    names = [i.name for i in inits]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DollError(f"--inits names {', '.join(dup)} twice; name them apart with NAME=FOLDER")
    return inits


def parse_fractions(text: str) -> list[float]:
    try:
        values = [float(v) for v in _items(text)]
    except ValueError:
        raise DollError(f"--fractions must be comma-separated numbers in (0, 1], got {text!r}") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise DollError(f"--fractions must be comma-separated numbers in (0, 1], got {text!r}")
    return sorted(dict.fromkeys(values))


def parse_modes(text: str) -> list[str]:
    modes = list(dict.fromkeys(_items(text)))
    if not modes or any(m not in MODES for m in modes):
        raise DollError(f"--modes {text!r}: choose some of {', '.join(MODES)} (comma-separated)")
    return modes


def plan(s: StudySettings) -> tuple[list[Init], str, list[Cell]]:
    """(inits, reference name, cells in the order they run: seed by seed, so that a study
    stopped early has whole pairs)."""
    if not issubclass(task_class(s.task), Segment):  # seg4cls and mixed score images by AUROC: not yet
        raise DollError(f"doll study runs segmentation tasks (jsrt, lung, covid, or a Segment subclass of your own as "
                        f"package.module:ClassName); --task {s.task} is not supported by it yet: run `doll finetune "
                        f"--task {s.task}` once per seed and init instead")
    check_positive(seeds=s.seeds, max_steps=s.max_steps, bootstrap=s.bootstrap)
    inits, fractions, modes = parse_inits(s.inits), parse_fractions(s.fractions), parse_modes(s.modes)
    reference = s.reference or inits[0].name
    if reference not in [i.name for i in inits]:
        raise DollError(f"--reference {reference} is none of the --inits ({', '.join(i.name for i in inits)})")
    cells = [Cell(f"{init.name}_{mode}_f{fraction:g}_s{seed}", init, mode, fraction, seed)
             for seed in range(s.seed, s.seed + s.seeds) for fraction in fractions for mode in modes for init in inits]
    return inits, reference, cells


def cell_settings(s: StudySettings, cell: Cell, out: Path, resume: bool = False, progress: bool = False,
                  device: str | None = None) -> FinetuneSettings:
    folder = init_is_folder(cell.init.spec)
    return FinetuneSettings(task=s.task, dataset=s.dataset, root=s.root, init=cell.init.spec,
                            out=str(out / "cells" / cell.name), mode=cell.mode, label_fraction=cell.fraction,
                            decoder=DEFAULT_DECODER if folder else s.decoder,
                            encoder=DEFAULT_ENCODER if folder else s.encoder, image_size=s.image_size, fold=s.fold,
                            max_steps=s.max_steps, val_every=s.val_every, batch_size=s.batch_size, lr=s.lr, seeds=1,
                            seed=cell.seed, device=device or s.device, resume=resume, progress=progress,
                            transfer=s.transfer if folder else "all",
                            pretrained_lr=s.pretrained_lr if cell.init.spec != "random" and cell.mode == "full" else 1.0)


def finished(folder: Path, want: FinetuneSettings) -> dict | None:
    """The cell's metrics.json when it trained the whole budget with the settings ``want``;
    None when the cell is not finished; DollError when it finished with other settings, or
    when its metrics.json or config.json is damaged (checked: :func:`doll.schema.read_run_metrics`,
    :func:`doll.utils.read_run_config`; doll replaces only what it knows it wrote)."""
    path, config = folder / "metrics.json", folder / "config.json"
    if not path.is_file() or not config.is_file():
        return None
    metrics = read_run_metrics(path, "delete it and run the study again with --resume (the cell finishes from its "
                                     "last checkpoint)")
    runs = metrics.get("runs") or []
    if len(runs) != 1 or runs[0].get("steps") != want.max_steps:
        return None
    stored = read_run_config(config, f"delete {folder} and run the study again with --resume (the cell is trained "
                                     "again)")
    given = json.loads(json.dumps(asdict(want)))
    # a setting newer than the cell: it ran with that setting's default
    stored = {**{f.name: f.default for f in fields(want) if f.default is not MISSING}, **stored}
    changed = differing_keys(stored, given, [k for k in given if k not in RUN_ONLY_SETTINGS])
    if changed:
        raise DollError(f"{folder} finished with other settings ({', '.join(changed)}) than this study's; "
                        "use the study's settings, or --overwrite to start it again")
    return metrics


def run_cells(todo: list, devices: list[str], run_one, on_done) -> None:
    """Run ``run_one(cell, device)`` for every cell of ``todo``, at most one cell per device at
    a time (one thread per device when there are several), and ``on_done(cell, result)`` after
    each, one at a time. The first error stops the scheduling of further cells (the cells
    running finish) and is raised."""
    if len(devices) <= 1:
        for cell in todo:
            on_done(cell, run_one(cell, devices[0] if devices else None))
        return
    waiting: queue.Queue = queue.Queue()
    for cell in todo:
        waiting.put(cell)
    done_lock, errors = threading.Lock(), []

    def worker(device: str) -> None:
        while not errors:
            try:
                cell = waiting.get_nowait()
            except queue.Empty:
                return
            try:
                result = run_one(cell, device)
                with done_lock:
                    on_done(cell, result)
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread below
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker, args=(d,), name=f"study-{d}", daemon=True) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@releases_outputs
def study(settings: StudySettings | None = None, **kwargs) -> dict:
    """Run (or resume) the study and write study.json, summary.md and report.html; returns
    study.json's content."""
    s = settings or StudySettings(**kwargs)
    resolve_paths(s, "root")
    inits, reference, cells = plan(s)
    for init in inits:
        holder = Init(init.name, init.spec)
        resolve_paths(holder, "spec")
        init.spec = holder.spec
    out = Path(s.out)
    devices = _items(s.devices) or [s.device]
    for init in inits:  # every init and mode checked before anything is written
        for mode in parse_modes(s.modes):
            check_settings(cell_settings(s, Cell("check", init, mode, 1.0, s.seed), out))
    shared = {k: getattr(s, k) for k in SHARED}
    prepare_out_dir(out, resume=s.resume, overwrite=s.overwrite, settings=shared, command="study",
                    inputs={"--root": s.root, **{f"--init {i.name}": i.spec.removeprefix("imagenet:")
                                                 for i in inits if i.spec != "random"}})
    write_json(out / "config.json", {"command": "study", **asdict(s)})
    (out / "cells").mkdir(exist_ok=True)

    records: dict[str, dict] = {}
    todo = []
    for cell in cells:
        metrics = finished(out / "cells" / cell.name, cell_settings(s, cell, out))
        if metrics is not None:
            records[cell.name] = summary.cell_record(metrics, cell.describe())
        else:
            todo.append(cell)
    total, t0, trained = len(cells), time.time(), []
    if s.progress:
        _log(f"study: {total} cells ({len(records)} finished before, reused), {len(todo)} to train on "
             f"{', '.join(devices)}; budget {s.max_steps} steps each")
    one_at_a_time = len(devices) <= 1

    def run_one(cell: Cell, device: str | None) -> dict:
        t = time.time()
        folder = out / "cells" / cell.name
        metrics = finetune(cell_settings(s, cell, out, resume=is_doll_output(folder),
                                         progress=s.progress and one_at_a_time, device=device))
        return {"metrics": metrics, "seconds": time.time() - t}

    def on_done(cell: Cell, result: dict) -> None:
        records[cell.name] = summary.cell_record(result["metrics"], cell.describe())
        trained.append(result["seconds"])
        left = len(todo) - len(trained)
        eta = sum(trained) / len(trained) * left / max(1, min(len(devices), left)) if left else 0.0
        if s.progress:
            _log(f"study: cell {len(records)}/{total} done: {cell.name}, mean IoU "
                 f"{result['metrics']['mean_iou']:.3f} ({_duration(result['seconds'])}); "
                 f"{'about ' + _duration(eta) + ' left' if left else 'all cells done'}")

    run_cells(todo, devices, run_one, on_done)
    ordered = [records[c.name] for c in cells]
    doc = {"command": "study", "doll_command": command_line(s), "settings": {**asdict(s), "reference": reference},
           "inits": [{"name": i.name, "init": i.spec} for i in inits], "reference": reference,
           "machine": study_report.machine(devices), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "n_cells": len(ordered), "n_trained_now": len(trained), "seconds": round(time.time() - t0, 2),
           "cells": [summary.public(c) for c in ordered],
           "groups": summary.groups(ordered, s.max_steps),
           "comparisons": summary.comparisons(ordered, reference, s.max_steps, s.bootstrap, s.seed)}
    study_report.write_all(out, doc)
    if s.progress:
        _log(f"study: {out / 'summary.md'}, {out / 'report.html'}, {out / 'study.json'}")
    return doc


def command_line(s: StudySettings) -> str:
    """The ``doll study`` command that makes (or resumes) this study."""
    import shlex

    parts = ["doll", "study", "--task", s.task, "--dataset", s.dataset, "--root", s.root, "--inits", s.inits,
             "--fractions", s.fractions, "--seeds", str(s.seeds), "--modes", s.modes, "--max-steps", str(s.max_steps)]
    defaults = StudySettings(root=".")
    for name in ("val_every", "decoder", "encoder", "image_size", "batch_size", "lr", "fold", "reference", "devices",
                 "bootstrap", "seed"):
        value = getattr(s, name)
        if value != getattr(defaults, name):
            parts += [f"--{name.replace('_', '-')}", str(value)]
    if s.device != "auto" and not s.devices:
        parts += ["--device", s.device]
    return shlex.join([*parts, "--out", s.out])
