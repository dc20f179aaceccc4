"""Small shared helpers: atomic files, JSON, devices, seeds, run folders, phase timing."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from doll.errors import DollError
from doll.outputs import (  # noqa: F401 - one writer per output, file system errors, leftover temporaries
    lock_output,
    os_error_message,
    os_errors,
    release_outputs,
    remove_leftover_temporaries,
)


# The input every network takes: uint8 images scaled to [0, 1], then (x - MEAN) / STD. Here,
# below both the data sets and the models, so that neither has to import the other.
MEAN, STD = 0.5, 0.25
NORMALISATION = {"scale": 1 / 255, "mean": MEAN, "std": STD}  # as written into each model's config.json


def to_tensor(images_u8: np.ndarray, scale: float = 1 / 255, mean: float = MEAN, std: float = STD) -> torch.Tensor:
    """uint8 (..., H, W) -> normalised float32 (..., 1, H, W): ``(x * scale - mean) / std``
    (the defaults are doll's; a model's config.json records the values it was trained with)."""
    x = torch.tensor(np.asarray(images_u8), dtype=torch.float32).div_(1.0 / scale)  # 1 / (1 / 255) == 255.0
    return x.sub_(mean).div_(std).unsqueeze(-3)


@dataclasses.dataclass(kw_only=True)
class RunOptions:
    """The options every command's settings share (the CLI's --seed, --device, --resume,
    --overwrite and --quiet)."""
    seed: int = 0
    device: str = "auto"  # auto (GPU if present), cpu, cuda or cuda:N
    resume: bool = False  # continue an interrupted run in its output
    overwrite: bool = False  # replace a previous run's output
    progress: bool = True  # progress bars

    def __post_init__(self):
        if self.resume and self.overwrite:  # each would silently win over the other somewhere
            raise DollError("--resume and --overwrite contradict each other: --resume continues the run in --out, "
                            "--overwrite deletes it; pass one of them")


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; on success fsync it and rename it over ``path``.

    A crash (or ``kill -9``) at any moment leaves either the old file or the new one,
    never a half-written file under the final name.
    """
    path = Path(path)
    if path.is_dir():
        raise DollError(f"{path} is a folder; name a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DollError(f"cannot write {path}: a part of {path.parent} is a file, not a folder") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename itself durable
            dfd = os.open(path.parent, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.errno == 28:  # ENOSPC
            raise DollError(f"disk full while writing {path}; free space or choose another --out") from None
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    return obj


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically (NaN becomes null, numpy types become Python types)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(jsonable(obj), indent=2) + "\n")


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DollError(f"--device {device} asked for a GPU but none is available; use --device cpu")
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DollError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) present")
        return dev
    raise DollError(f"unknown --device {device!r}; use auto, cpu, cuda or cuda:N")


def resolve_paths(settings, *fields: str) -> None:
    """Make the named path settings absolute (in place), so that config.json records where
    the inputs were and ``--resume`` from another folder, or with a path typed differently,
    sees the same settings. ``random`` and ``imagenet:`` prefixes of ``--init`` are kept."""
    for name in fields:
        value = getattr(settings, name)
        value = str(value) if isinstance(value, Path) else value
        if not isinstance(value, str) or not value.strip() or value == "random":
            continue
        prefix = "imagenet:" if value.startswith("imagenet:") else ""
        if not value[len(prefix):].strip():  # "imagenet:" names no file (not the current folder): the check says so
            continue
        setattr(settings, name, prefix + str(Path(value[len(prefix):]).expanduser().resolve()))


# settings that do not change what a run computes: --resume may change them
RUN_ONLY_SETTINGS = ("out", "resume", "overwrite", "progress", "device", "num_workers")


def differing_keys(a: dict, b: dict, keys=None) -> list[str]:
    """The keys (default: of either dict) whose values differ between ``a`` and ``b``, sorted."""
    return sorted(k for k in (set(a) | set(b) if keys is None else keys) if a.get(k) != b.get(k))


def prepare_out_dir(out: str | Path, *, resume: bool = False, overwrite: bool = False, marker: str = "config.json",
                    settings: dict | None = None) -> Path:
    """Create ``out``; refuse a folder that already holds a run unless resuming or overwriting,
    and always a folder of other files (no ``marker``, ``metrics.json`` or ``last.pt``).
    With ``settings`` (the command's settings, as written into ``config.json``), ``--resume``
    of a run made with other settings is refused: its finished models would be reported
    under the new settings.

    ``out`` is locked for the rest of the command (:func:`lock_output`: a second writer is
    refused, not run beside this one), and the temporaries a killed write left in it are
    removed (:func:`remove_leftover_temporaries`). File system errors (permission,
    read-only, a file where a folder should be) become a DollError naming the path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DollError(f"--out {out} is a file; choose a folder")
    with os_errors(out):
        lock_output(out)
        holds_run = out.is_dir() and any(out.iterdir())
        ours = any((out / name).exists() for name in (marker, "metrics.json", "last.pt"))  # a run, killed or not
        if holds_run and not ours:  # neither --resume nor --overwrite would do: another folder would
            raise DollError(f"{out} is not empty and does not look like a doll run; choose another --out or empty it "
                            "(--overwrite replaces only a doll run)")
        if holds_run and not (resume or overwrite):
            raise DollError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")
        if holds_run and resume and settings is not None and (out / "config.json").is_file():
            stored = read_json(out / "config.json")
            stored = stored.get("doll", {}).get("run", stored)  # a checkpoint folder's config: the run's settings
            given = json.loads(json.dumps(settings))
            changed = differing_keys(stored, given, [k for k in given if k not in RUN_ONLY_SETTINGS and k in stored])
            if changed:
                raise DollError(f"--resume with different settings ({', '.join(changed)}) from the run in {out}; use "
                                "its settings, or --overwrite to start again")
        if holds_run and overwrite and not resume:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        remove_leftover_temporaries(out)
    return out


def prepare_out_file(out: str | Path, *, overwrite: bool = False, is_ours=None, what: str = "file") -> Path:
    """The file counterpart of :func:`prepare_out_dir` (``doll explain``'s label file and the
    label files ``labels merge | refine`` write): lock ``out``, refuse to replace an existing
    file without ``overwrite``, or, with it, one that ``is_ours(path)`` says doll did not
    write, and remove the temporaries a killed write of ``out`` left next to it."""
    out = Path(out)
    if out.is_dir():
        raise DollError(f"--out {out} is a folder; name the {what} to write")
    if out.parent.exists() and not out.parent.is_dir():
        raise DollError(f"--out {out}: {out.parent} is a file, not a folder")
    with os_errors(out):
        lock_output(out)
        if out.exists():
            if not overwrite:
                raise DollError(f"{out} already exists; pass --overwrite to replace it")
            if is_ours is not None and not is_ours(out):
                raise DollError(f"{out} is not a doll {what}; refusing to replace it with --overwrite (choose "
                                "another --out)")
        remove_leftover_temporaries(out.parent, prefix=out.name, recursive=False)
    return out


def load_class(spec: str, base: type, option: str) -> type:
    """The class ``spec`` (``package.module:ClassName``) names, which must subclass ``base``:
    how a built-in registry entry is loaded, and how ``--dataset`` / ``--method`` take a
    user's own format or explainer without changing doll (docs/extending.md)."""
    import importlib

    module, _, name = spec.partition(":")
    if not module or not name:
        raise DollError(f"{option} {spec!r}: write a class of your own as package.module:ClassName")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise DollError(f"{option} {spec!r}: cannot import {exc.name!r}; install the package or add its folder "
                        "to PYTHONPATH") from None
    cls = getattr(mod, name, None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        what = "has no class of that name" if cls is None else f"{name} is not a subclass of {base.__module__}.{base.__name__}"
        raise DollError(f"{option} {spec!r}: module {module} {what}")
    return cls


def check_positive(**values) -> None:
    for name, v in values.items():
        if v is not None and v <= 0:
            raise DollError(f"--{name.replace('_', '-')} must be positive, got {v}")


def check_fraction(label_fraction: float) -> None:
    if not (0 < label_fraction <= 1):
        raise DollError(f"--label-fraction must be in (0, 1], got {label_fraction}")


def tool_version() -> str:
    from doll import __version__

    return __version__


class Stopwatch:
    """Wall seconds per named phase, summed over calls: ``with watch("decode"): ...``.
    Safe to use from several threads (each phase adds its own time)."""

    def __init__(self):
        self.totals: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.totals[phase] = self.totals.get(phase, 0.0) + time.perf_counter() - start

    def seconds(self, ndigits: int = 2) -> dict[str, float]:
        return {k: round(v, ndigits) for k, v in self.totals.items()}
