"""Checkpoints that never unpickle: ``model.safetensors`` + ``config.json``.

``config.json`` holds a ``"doll"`` section (kind, architecture, classes, image size,
normalisation, training settings, tool version). Segmenters additionally carry the
segmentation-models-pytorch keys (``_model_class``, ``encoder_name``, ...) at the top
level, so ``segmentation_models_pytorch.from_pretrained(dir)`` loads them offline.
Training state (optimiser, scheduler, RNG) is ``train_state.pt`` saved with plain
tensors and containers and read with ``torch.load(weights_only=True)``.

A run folder (a classifier member ``member_<i>/``, a pretrain folder, a finetune run's
``model/``) is *finished* when its ``metrics.json`` says ``"finished": true``; the training
engine writes that last. :func:`read_config` refuses an unfinished one
(:func:`require_finished`), so no stage builds on the weights a killed run left.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from doll.errors import DollError
from doll.models.names import CLASSIFIER_ARCHS, DECODERS, ENCODERS, one_of
from doll.schema import FIX_CONFIG, check_train_state, check_weights, read_checkpoint_config, read_run_metrics
from doll.utils import atomic_path, fail, read_run_config, tool_version, write_json

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"
METRICS_FILE, LAST_FILE = "metrics.json", "last.pt"
SEEN_IDS_FILE = "pretrained_ids.txt"  # a pretrain folder: the image ids it trained on, one a line


def run_progress(metrics: dict, config: dict | None = None) -> str:
    """How far a run got, for messages: ``step S of N`` when the run counts steps
    (``steps_run`` / ``max_steps`` in its metrics or settings), else ``epoch E of N``
    (``epochs_run`` of the ``epochs`` in its settings); ``of N`` is left out when unknown."""
    settings = {}
    config = config if isinstance(config, dict) else {}  # a damaged config.json says nothing of the progress
    doll = config.get("doll") if isinstance(config.get("doll"), dict) else {}
    for section in (doll.get("settings"), doll.get("run"), config):
        if isinstance(section, dict):
            settings = {**section, **settings}  # the engine's settings first, then the run's
    if "steps_run" in metrics or "max_steps" in metrics or settings.get("max_steps"):
        done = metrics.get("steps_run", metrics.get("steps"))
        total, unit = metrics.get("max_steps") or settings.get("max_steps"), "step"
    else:
        done, total, unit = metrics.get("epochs_run"), metrics.get("epochs") or settings.get("epochs"), "epoch"
    done = "?" if done is None else done
    return f"{unit} {done} of {total}" if total else f"{unit} {done}"


def recognised_config(folder: str | Path) -> dict:
    """A folder's ``config.json`` for recognising the folder (its kind, its command) and for
    wording messages only: a JSON object whose ``doll`` section and ``doll.run`` are objects
    where present (:func:`doll.utils.read_run_config`), else ``{}``: a missing, damaged or
    tampered file is read as "not a doll folder of that kind", never a traceback. No decision
    rests on it alone: the reader that uses the folder checks the file itself
    (:func:`read_config` with :func:`doll.schema.read_checkpoint_config`) and names what is wrong."""
    with contextlib.suppress(OSError, DollError):
        return read_run_config(Path(folder) / CONFIG_FILE, "")
    return {}


def require_finished(folder: str | Path, what: str = "run") -> None:
    """Refuse a run folder whose training did not finish: its ``metrics.json`` does not say
    ``"finished": true`` (the engine writes that last), or it has a ``last.pt`` but no
    ``metrics.json``. A folder with neither (a checkpoint put together by hand) passes.
    ``error: <folder> is an unfinished run (epoch 1 of 3); finish it with --resume``.
    ``metrics.json`` decides, so it is checked (:func:`doll.schema.read_run_metrics`): a damaged
    or tampered one (``"finished": "yes"``, not JSON) is an error naming the field, never taken
    as finished or unfinished; ``config.json`` only words the progress (:func:`recognised_config`)."""
    folder = Path(folder)
    metrics_file = folder / METRICS_FILE
    config = recognised_config(folder)  # for the message only: a damaged one says nothing of the progress
    if metrics_file.is_file():
        metrics = read_run_metrics(metrics_file, f"delete it and finish the {what} with --resume (or start it again "
                                                 "with --overwrite)")
        if metrics.get("finished") is True:
            return
        raise DollError(f"{folder} is an unfinished {what} ({run_progress(metrics, config)}); finish it with --resume")
    if (folder / LAST_FILE).exists():
        raise DollError(f"{folder} is an unfinished {what} ({run_progress({}, config)}: it has {LAST_FILE} but no "
                        f"{METRICS_FILE}); finish it with --resume")


# what a folder is, for messages: a checkpoint's doll.kind, or the command of a run folder whose config.json is the
# run's own (an ensemble's top folder, a finetune run's top folder)
KIND_NAMES = {"classifier": "a classifier folder (from doll train-classifiers)",
              "segmenter": "a segmenter (a doll pretrain folder, or the model/ folder of a doll finetune run)",
              "finetune": "a doll finetune run (its segmenter is in its model/ folder)"}
RUN_KINDS = {"train-classifiers": "classifier", "finetune": "finetune"}


def require_kind(folder: str | Path, kind: str) -> None:
    """Refuse a folder of another kind than ``kind``, saying what it is: checked before
    :func:`require_finished`, since a run folder of another stage (whose metrics.json has no
    finished marker) is not an unfinished run of this one. A folder whose kind is unknown passes."""
    # config.json only recognises the folder here: a damaged one is of no known kind and passes, and
    # read_config's schema check (read_checkpoint_config) then names what is wrong with it
    config = recognised_config(folder)
    doll = config.get("doll") or {}
    command = config.get("command")
    found = doll.get("kind") or (RUN_KINDS.get(command) if isinstance(command, str) else None)
    if isinstance(found, str) and found != kind:  # a kind that is not text: read_config's schema names it
        raise DollError(f"{folder} is {_kind_name(found)}, not {_kind_name(kind)}")


def _kind_name(kind: str) -> str:
    return KIND_NAMES.get(kind, f"a {kind!r} checkpoint")


def save_weights(path: str | Path, model: torch.nn.Module) -> None:
    """The model's weights as a safetensors file, written atomically."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in unwrap(model).state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "doll_version": tool_version()})


def save_model(folder: str | Path, model: torch.nn.Module | None, doll_config: dict,
               extra_config: dict | None = None) -> None:
    """``model.safetensors`` (unless ``model`` is None: already in place) and ``config.json``."""
    folder = Path(folder)
    if model is not None:
        save_weights(folder / MODEL_FILE, model)
    config = dict(extra_config or {})
    config["doll"] = {**doll_config, "version": tool_version()}
    write_json(folder / CONFIG_FILE, config)


def read_config(folder: str | Path, kind: str | None = None) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        if folder.name in ("imagenet", "imagenet:") and not folder.exists():
            raise DollError("--init imagenet needs the weights file: write --init imagenet:/path/to/weights.safetensors "
                            "(torchvision's weights for the encoder, a local file; doll never downloads them)")
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DollError(f"checkpoint folder {folder} {what}; point --init/--classifiers at a doll output folder")
    if kind is not None:
        require_kind(folder, kind)  # before the finished check: another stage's folder is not an unfinished run
    require_finished(folder)  # before the files' checks: a run killed early has last.pt but no model yet
    if not (folder / MODEL_FILE).exists():
        pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise DollError(f"{folder} holds {', '.join(pickles)} (pickle) but no {MODEL_FILE}; doll never unpickles "
                            "checkpoints, convert it to safetensors")
        raise DollError(f"no {MODEL_FILE} in {folder}; is it a doll checkpoint folder?")
    # every field a reader uses, checked (doll.schema); another kind was refused by require_kind
    return check_network_names(folder / CONFIG_FILE, read_checkpoint_config(folder / CONFIG_FILE, kind))


def check_network_names(path: Path, config: dict) -> dict:
    """The networks a checkpoint's config names are ones doll builds: a classifier's ``arch``
    (one doll trained; an imported one, with a ``source``, names its library's), a segmenter's
    ``encoder`` and ``decoder``. An unknown name is the file's error, not an unknown option's."""
    doll = config["doll"]
    checks = []
    if doll.get("kind") == "classifier" and doll.get("source") is None:
        checks.append(("arch", CLASSIFIER_ARCHS, "a torchvision architecture doll trains"))
    if doll.get("kind") == "segmenter":
        checks += [("encoder", ENCODERS, "an encoder doll builds"), ("decoder", DECODERS, "a decoder doll builds")]
    for key, names, what in checks:
        if key in doll and doll[key] is not None and doll[key] not in names:
            raise fail(path, f"doll.{key}", doll[key], f"one of {one_of(names)} ({what})", FIX_CONFIG)
    return config


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a damaged file is a DollError, not a crash."""
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for bad headers
        first = (str(exc).splitlines() or [""])[0]
        raise DollError(f"{path} is corrupt or truncated ({type(exc).__name__}: {first}); copy it again or rerun "
                        "the command that wrote it") from None


def read_weights_file(path: str | Path, option: str, finite: bool = True) -> dict[str, torch.Tensor]:
    """Pretrained weights from a local file the user names (``option`` is the flag, for the
    messages): safetensors, or a plain state dict read with ``weights_only=True``; a
    ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped, a ``module.``
    prefix (DataParallel) dropped. Never downloads, never unpickles objects. NaN or
    infinite values are refused, unless ``finite`` is False (the caller checks the weights
    itself: torchxrayvision's files mark untrained outputs with NaN thresholds)."""
    p = Path(path)
    if p.is_dir():
        raise DollError(f"{option}{path} is a folder; name the weights file in it")
    if not p.is_file():
        raise DollError(f"{option}{path}: no such file (weights are never downloaded; name a local file)")
    if p.suffix == ".safetensors":
        state = read_safetensors(p)
    else:
        try:
            with warnings.catch_warnings():  # torch's pickle-protocol warning: the refusal below says it all
                warnings.simplefilter("ignore")
                state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - pickles of objects are refused here, and so is junk
            with open(p, "rb") as fh:
                head = fh.read(2)
            found = ("it holds Python objects, which doll never unpickles" if head[:2] == b"PK" or head[:1] == b"\x80"
                     else "it is not a PyTorch file (damaged, or another format)")
            raise DollError(f"refusing to load {p}: expected a plain state dict of tensors (what "
                            f"torch.save(model.state_dict()) writes) or a .safetensors file, but {found}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise DollError(f"{p} holds a {type(state).__name__}, not a state dict (name -> tensor)")
    state = {str(k).removeprefix("module."): v for k, v in state.items() if torch.is_tensor(v)}
    return check_weights(p, state) if finite else state


def load_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint folder; NaN or infinite values are refused (naming the first such tensor)."""
    path = Path(folder) / MODEL_FILE
    return check_weights(path, read_safetensors(path))


def load_into(model: torch.nn.Module, folder: str | Path, strict: bool = True) -> None:
    try:
        unwrap(model).load_state_dict(load_state(folder), strict=strict)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise DollError(f"weights in {folder} do not fit the model ({first}); architecture or classes differ") from None


def save_train_state(path: str | Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_train_state(path: str | Path) -> dict:
    """A run's ``last.pt``, its keys and progress checked (:func:`doll.schema.check_train_state`)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle payloads are refused here
        raise DollError(f"refusing to load {path}: not a plain-tensor training state ({type(exc).__name__})") from None
    return check_train_state(path, state)


def restore_model(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """Load the weights of a training state (``state["model"]``) into ``model``; weights of
    another network are a DollError naming ``path``."""
    try:
        unwrap(model).load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0].rstrip(":")
        raise DollError(f"{path}: model is the weights of another network ({first}); expected the network this "
                        "command builds, resume with the first run's settings or start again with --overwrite") from None


def restore_train_state(state: dict, path: str | Path, model: torch.nn.Module, optimizer, scheduler,
                        scaler=None) -> None:
    """Put a checked training state (:func:`load_train_state`) back: weights, optimiser (its
    tensors must fit the parameters), scheduler, gradient scaler (when given and saved) and
    torch's random-number state. What does not fit is a DollError naming ``path``."""
    restore_model(model, state, path)
    try:
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:
            for p in group["params"]:
                for key, value in optimizer.state.get(p, {}).items():
                    if torch.is_tensor(value) and value.ndim and value.shape != p.shape:
                        raise ValueError(f"its {key} of shape {tuple(value.shape)} does not fit a parameter of shape "
                                         f"{tuple(p.shape)}")
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"]:  # empty when saved by a run without fp16
            scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DollError(f"{path}: optimizer is the state of another optimiser or network ({first}); expected the "
                        "state this command saved, resume with the first run's settings or start again with "
                        "--overwrite") from None
    torch.set_rng_state(state["rng_torch"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model
