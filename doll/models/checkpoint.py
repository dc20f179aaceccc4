"""Checkpoints that never unpickle: ``model.safetensors`` + ``config.json``.

``config.json`` holds a ``"doll"`` section (kind, architecture, classes, image size,
normalisation, training settings, tool version). Segmenters additionally carry the
segmentation-models-pytorch keys (``_model_class``, ``encoder_name``, ...) at the top
level, so ``segmentation_models_pytorch.from_pretrained(dir)`` loads them offline.
Training state (optimiser, scheduler, RNG) is ``train_state.pt`` saved with plain
tensors and containers and read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from doll.errors import DollError
from doll.utils import atomic_path, tool_version, write_json

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"


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
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DollError(f"checkpoint folder {folder} {what}; point --init/--classifiers at a doll output folder")
    if not (folder / MODEL_FILE).exists():
        pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise DollError(f"{folder} holds {', '.join(pickles)} (pickle) but no {MODEL_FILE}; doll never unpickles "
                            "checkpoints, convert it to safetensors")
        raise DollError(f"no {MODEL_FILE} in {folder}; is it a doll checkpoint folder?")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
        doll = config["doll"]
    except (OSError, ValueError, KeyError):
        raise DollError(f"{folder / CONFIG_FILE} is missing or not a doll checkpoint config") from None
    if kind is not None and doll.get("kind") != kind:
        raise DollError(f"{folder} holds a {doll.get('kind')!r} checkpoint, this command needs a {kind!r} one")
    return config


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a damaged file is a DollError, not a crash."""
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for bad headers
        first = (str(exc).splitlines() or [""])[0]
        raise DollError(f"{path} is corrupt or truncated ({type(exc).__name__}: {first}); copy it again or rerun "
                        "the command that wrote it") from None


def read_weights_file(path: str | Path, option: str) -> dict[str, torch.Tensor]:
    """Pretrained weights from a local file the user names (``option`` is the flag, for the
    messages): safetensors, or a plain state dict read with ``weights_only=True``; a
    ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped, a ``module.``
    prefix (DataParallel) dropped. Never downloads, never unpickles objects."""
    p = Path(path)
    if not p.is_file():
        raise DollError(f"{option}{path}: no such file (weights are never downloaded; name a local file)")
    if p.suffix == ".safetensors":
        state = read_safetensors(p)
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise DollError(f"refusing to load {p}: not a plain state dict ({type(exc).__name__})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise DollError(f"{p} holds a {type(state).__name__}, not a state dict (name -> tensor)")
    return {k.removeprefix("module."): v for k, v in state.items() if torch.is_tensor(v)}


def load_state(folder: str | Path) -> dict[str, torch.Tensor]:
    return read_safetensors(Path(folder) / MODEL_FILE)


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
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle payloads are refused here
        raise DollError(f"refusing to load {path}: not a plain-tensor training state ({type(exc).__name__})") from None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model
