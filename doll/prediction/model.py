"""The segmenter of a doll output folder, ready to apply, with its preprocessing.

Accepted: a segmenter folder (``doll pretrain``'s output, a finetune run's ``model/``,
seg4cls's ``segmenter/`` or ``student/``; full, adapter and head modes) or a finetune run's
top folder: its ``model/``, else seg4cls's ``student/`` (trained with --pseudo/--boosted),
else ``segmenter/``; a run with other segmenters (``--seeds N``: ``seed_<k>/``; mixed's
``segmentation_only/``) names them and asks for one.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from doll.data.images import read_normalisation
from doll.errors import DollError
from doll.models.checkpoint import CONFIG_FILE, recognised_config
from doll.models.segmenter import load_segmenter as load_saved_segmenter

PREFERRED = ("model", "student", "segmenter")  # in a run's top folder: finetune's model, seg4cls's final segmenter


def _kind(folder: Path) -> str | None:
    """``segmenter`` (any doll checkpoint's kind), ``finetune`` (a finetune run's top folder) or None.
    config.json only recognises the folder here: a missing, damaged or tampered one is of no
    known kind (:func:`doll.models.checkpoint.recognised_config`), and the segmenter's loader
    (``read_config``: :func:`doll.schema.read_checkpoint_config`) names what is wrong with it."""
    config = recognised_config(folder)
    doll = config.get("doll")
    return doll.get("kind") if isinstance(doll, dict) else "finetune" if config.get("command") == "finetune" else None


def segmenter_folder(folder: str | Path, option: str = "--model") -> Path:
    """The segmenter folder ``folder`` names: itself, or the one segmenter of a run's top folder."""
    folder = Path(folder)
    if not folder.exists():
        raise DollError(f"{option} {folder} does not exist; name a doll segmenter folder (doll pretrain's --out, or "
                        "a doll finetune run)")
    if not folder.is_dir():
        raise DollError(f"{option} {folder} is a file; name the folder that holds model.safetensors and config.json")
    if _kind(folder) != "finetune":
        return folder  # a segmenter, or not: load_segmenter's checks say what it is
    found = sorted(d for d in folder.iterdir() if d.is_dir() and _kind(d) == "segmenter")
    if not found:
        for name in PREFERRED:  # an unfinished run: the loader says how far it got and how to finish it
            if (folder / name).is_dir():
                return folder / name
        raise DollError(f"{option} {folder} is a doll finetune run without a finished segmenter in it; finish it "
                        "with --resume, or name a segmenter folder")
    for name in PREFERRED:
        if folder / name in found:
            return folder / name
    raise DollError(f"{option} {folder} is a doll finetune run with segmenters in "
                    f"{', '.join(d.name + '/' for d in found)}; name the one to apply, e.g. {option} {found[0]}")


def load_segmenter(folder: str | Path) -> tuple[nn.Module, dict]:
    """Any segmenter doll wrote, ready to apply: ``(model, config)``.

    ``folder`` is a segmenter folder (``doll pretrain``'s output; a finetune run's
    ``model/``, in full, adapter or head mode; seg4cls's ``segmenter/``) or a finetune run's
    top folder. ``model`` is on the CPU in eval mode and returns logits (N, C, H, W) for
    input (N, 1, S, S) (a head trained with ``--aux`` is dropped); ``config`` is the doll
    section of its config.json, with ``folder`` (the segmenter folder used) and
    ``normalisation`` complete (every preprocessing step and value; older folders get the
    values they were made with)::

        model, config = doll.load_segmenter("runs/ft")
        print(config["classes"], config["image_size"], config["normalisation"]["steps"])
    """
    from doll.models.segmenter import drop_aux_head

    path = segmenter_folder(folder)
    model, cfg = load_saved_segmenter(path)
    classes = cfg.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DollError(f"{path / CONFIG_FILE}: 'classes' must be a list of structure names")
    size = cfg.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= 8192:
        raise DollError(f"{path / CONFIG_FILE}: 'image_size' {size!r} is not a size in pixels")
    normalisation = read_normalisation(cfg.get("normalisation"), str(path / CONFIG_FILE))
    return drop_aux_head(model).eval(), {**cfg, "folder": str(path), "normalisation": normalisation}
