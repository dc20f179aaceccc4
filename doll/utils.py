"""Small shared helpers: atomic files, JSON, devices, seeds, run folders, phase timing."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from doll.errors import DollError
from doll.settings import (  # noqa: F401 - the settings layer, re-exported where the stages import it
    MAX_IMAGE_SIZE,
    MAX_SEED,
    RunOptions,
    check_setting_values,
    option,
)
from doll.outputs import (  # noqa: F401 - one writer per output, what doll owns, file system errors
    _apply_umask,
    check_inputs_apart,
    claim_folder,
    fingerprint,
    inside,
    is_doll_output,
    lock_output,
    os_error_message,
    os_errors,
    read_manifest,
    record_written,
    MANIFEST as MANIFEST_NAME,
    release_outputs,
    remove_doll_output,
    remove_leftover_temporaries,
    resolved,
    safe_name,
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
    record_written(path)  # listed in its output's manifest first; a file doll did not write is never replaced
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _apply_umask(tmp)  # the mode the umask gives, not mkstemp's 0600
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename itself durable
            dfd = os.open(path.parent, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        message = os_error_message(exc, path)  # disk full, permission, read-only, ...: one line, nothing kept
        if message is not None:
            raise DollError(message) from None
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_png_file(path: str | Path, image: np.ndarray) -> None:
    """A PNG written as every doll file is: listed in its output's manifest, under a temporary
    name until complete, with the umask's mode. Not fsynced (exports write thousands)."""
    import cv2

    path = Path(path)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise DollError(f"cannot encode {path.name} as PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    record_written(path)
    tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
    try:
        tmp.write_bytes(buf.tobytes())
        _apply_umask(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        message = os_error_message(exc, path)
        if message is not None:
            raise DollError(message) from None
        raise


def unique_names(names, fallback: str = "item") -> list[str]:
    """Strings read from a file (class names, image ids), each made one safe path component
    (:func:`doll.outputs.safe_name`; ``fallback_<i>`` when nothing is left); names that then
    collide, ignoring case as some file systems do, get ``-2``, ``-3``, ..."""
    out, seen = [], set()
    for i, name in enumerate(names):
        base = candidate = safe_name(name, f"{fallback}_{i}")
        k = 1
        while candidate.lower() in seen:
            k += 1
            candidate = f"{base}-{k}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


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


# -- reading back what doll wrote: the primitives of doll.schema (one layer up, which imports them from here),
# here so that prepare_out_dir reads a run's config.json with them. A file that does not fit is one DollError:
# ``<file>: <field> is <what was found>; expected <what fits>, <how to fix>``

class Found:
    """What was found, already in words (no quotes around it in a message)."""

    def __init__(self, text: str):
        self.text = text


MISSING = Found("missing")


def show(value) -> str:
    """A value as a message shows it: short, on one line."""
    if isinstance(value, Found):
        return value.text
    if isinstance(value, np.ndarray):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    if type(value).__name__ == "Tensor":
        return f"a tensor of shape {tuple(value.shape)} and dtype {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, dict):
        text = f"an object with keys {' '.join(repr(list(value)[:6]).split())}"
    elif isinstance(value, (list, tuple)) and len(value) > 6:
        text = f"a {type(value).__name__} of {len(value)} items, {' '.join(repr(list(value[:3])).split())[:-1]}, ...]"
    else:
        text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def fail(path, field: str, found, expected: str, fix: str) -> DollError:
    """``<path>: <field> is <found>; expected <expected>, <fix>``."""
    return DollError(f"{path}: {field} is {show(found)}; expected {expected}, {fix}")


def read_json_file(path, fix: str):
    """A JSON file's content; not UTF-8 or not JSON is :func:`fail`'s error."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
        return json.loads(text)
    except UnicodeDecodeError:
        raise fail(path, "the content", Found("not UTF-8 text"), "a JSON file", fix) from None
    except ValueError as exc:
        where = f"{exc.msg} at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else exc
        raise fail(path, "the content", Found(f"not JSON ({where})"), "a JSON file", fix) from None
    except RecursionError:
        raise fail(path, "the content", Found("JSON nested too deeply"), "a JSON file", fix) from None


FIX_RUN_CONFIG = "start the run again with --overwrite (or put back a copy of the file)"


def read_run_config(path, fix: str = FIX_RUN_CONFIG) -> dict:
    """A run's ``config.json`` (what ``--resume`` compares its settings with): a JSON object,
    the run's settings, or a checkpoint config whose ``doll`` section, and ``doll.run`` in it,
    are objects where present (``doll.run`` then holds the settings). Listed with
    :mod:`doll.schema`'s readers; here, one layer below it, because :func:`prepare_out_dir`
    reads it."""
    config = read_json_file(path, fix)
    if not isinstance(config, dict):
        raise fail(path, "the content", config, "a JSON object (the run's settings)", fix)
    section = config.get("doll")
    if section is not None and not isinstance(section, dict):
        raise fail(path, "doll", section, "an object (the doll section of a checkpoint config)", fix)
    if "run" in (section or {}) and not isinstance(section["run"], dict):
        raise fail(path, "doll.run", section["run"], "an object (the run's settings)", fix)
    return config


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


def prepare_out_dir(out: str | Path, *, resume: bool = False, overwrite: bool = False, settings: dict | None = None,
                    inputs: dict | None = None, command: str = "", holds: str = "a run") -> Path:
    """Create ``out`` as a doll output, or take over the doll output already there.

    What doll owns is what it marked (:data:`doll.outputs.MANIFEST`, a list of the files it
    wrote): a non-empty folder without a manifest is refused whatever the flags;
    ``--overwrite`` deletes only the files the manifest lists and refuses (deleting
    nothing) when anything else is there; ``--resume`` continues only with the settings
    (``settings``, as written into ``config.json``) and the inputs (``inputs``,
    ``{"--root": path, ...}``, fingerprinted) the run started with. ``out`` may not be,
    lie inside or hold one of ``inputs``: checked before anything is created or removed.

    ``out`` is locked for the rest of the command (:func:`lock_output`: a second writer, also
    one inside or above ``out``, is refused), and the temporaries a killed write left in it
    are removed. File system errors become a DollError naming the path."""
    out = Path(out)
    if out.is_symlink():
        raise DollError(f"--out {out} is a symbolic link; name the real folder ({resolved(out, '--out')})")
    if out.exists() and not out.is_dir():
        raise DollError(f"--out {out} is a file; choose a folder")
    inputs = {k: v for k, v in (inputs or {}).items() if v is not None}
    check_inputs_apart(out, inputs)
    prints = {option: fingerprint(str(value).removeprefix("imagenet:")) for option, value in inputs.items()
              if str(value) not in ("", "random")}
    with os_errors(out):
        lock_output(out)
        holds_run = out.is_dir() and any(out.iterdir())
        if holds_run and not is_doll_output(out):  # neither --resume nor --overwrite would do
            raise DollError(f"{out} is not empty and was not written by doll (it has no {MANIFEST_NAME}); choose "
                            "another --out or empty it (--overwrite replaces only what doll wrote)")
        earlier = read_manifest(out)[0].get("command") if holds_run else None
        if holds_run and command and earlier and earlier != command:  # never replace another stage's output
            noun = holds if holds != "a run" else f"a doll {command} run"
            raise DollError(f"--out {out} holds something other than {noun}; choose another --out (it is the "
                            f"output of doll {earlier})")
        if holds_run and not (resume or overwrite):
            how = "pass --resume to continue it or --overwrite to replace it" if holds == "a run" else \
                "pass --overwrite to replace it"
            raise DollError(f"{out} already holds {holds}; {how}")
        if holds_run and resume:
            if settings is not None and (out / "config.json").is_file():
                stored = read_run_config(out / "config.json")  # a JSON object; a damaged one is a one-line error
                stored = (stored.get("doll") or {}).get("run", stored)
                given = json.loads(json.dumps(jsonable(settings)))
                changed = differing_keys(stored, given, [k for k in given if k not in RUN_ONLY_SETTINGS and k in stored])
                if changed:
                    raise DollError(f"--resume with different settings ({', '.join(changed)}) from the run in {out}; "
                                    "use its settings, or --overwrite to start again")
            started = read_manifest(out)[0].get("inputs", {})
            changed = [option for option, value in prints.items()
                       if isinstance(started, dict) and option in started and started[option] != value]
            if changed:
                raise DollError(f"--resume: {', '.join(f'{o} {inputs[o]}' for o in changed)} changed since the run in "
                                f"{out} started; resume with the inputs it started with, or --overwrite to start again")
        if holds_run and overwrite and not resume:
            remove_doll_output(out)
        out.mkdir(parents=True, exist_ok=True)
        claim_folder(out, {"doll": tool_version(), "command": command, "inputs": prints})
        remove_leftover_temporaries(out)
    return out


def prepare_out_file(out: str | Path, *, overwrite: bool = False, is_ours=None, what: str = "file",
                     inputs: dict | None = None) -> Path:
    """The file counterpart of :func:`prepare_out_dir` (the label file of ``doll explain``
    and ``labels merge | refine``, ``doll show``'s picture, ...): lock ``out``, refuse to
    replace an existing file without ``overwrite``, or, with it, one that ``is_ours(path)``
    says doll did not write, refuse an ``out`` that is one of ``inputs`` or lies inside one,
    and remove the temporaries a killed write of ``out`` left next to it."""
    out = Path(out)
    if not str(out).strip():
        raise DollError(f"--out is empty; name the {what} to write")
    if out.is_symlink():
        raise DollError(f"--out {out} is a symbolic link; name the real file ({resolved(out, '--out')})")
    if out.is_dir():
        raise DollError(f"--out {out} is a folder; name the {what} to write")
    if out.parent.exists() and not out.parent.is_dir():
        raise DollError(f"--out {out}: {out.parent} is a file, not a folder")
    check_inputs_apart(out, {k: v for k, v in (inputs or {}).items() if v is not None})
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
    how a built-in registry entry is loaded, and how ``--dataset`` / ``--method`` / ``--task``
    take a user's own format, explainer or task without changing doll (docs/extending.md)."""
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


def registered_class(name: str, registry: dict[str, str], base: type, option: str, unknown: str) -> type:
    """The class of a built-in ``name`` (a row of ``registry``: name -> ``module:Class``) or of a
    user's ``package.module:ClassName``; ``unknown``: the error for anything else. The one way
    ``--dataset``, ``--method`` and ``--task`` resolve their value."""
    if name in registry:
        return load_class(registry[name], base, option)
    if ":" in name:
        return load_class(name, base, option)
    raise DollError(unknown)


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
