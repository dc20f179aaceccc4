"""A classifier ensemble read back for explaining: the ``member_*`` folders of a
``doll train-classifiers`` run (or one checkpoint folder), each built by its config's
``arch`` and loaded from its safetensors, with what the label file records of it."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from doll.errors import DollError
from doll.models.checkpoint import CONFIG_FILE, MODEL_FILE, load_into, read_config, require_finished
from doll.models.imported import classifier_from_config
from doll.schema import read_ensemble_config
from doll.utils import show


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_ensemble(folder: str | Path, device: torch.device):
    """The members (``member_*`` folders, or one checkpoint folder) of a classifier ensemble."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DollError(f"--classifiers {folder} does not exist; train some with `doll train-classifiers`")
    dirs = sorted(p for p in folder.glob("member_*") if p.is_dir()) or [folder]
    require_complete_ensemble(folder, dirs)
    members = []
    for d in dirs:
        cfg = read_config(d, kind="classifier")["doll"]
        model = classifier_from_config(cfg)  # doll's own network, or an imported one (cfg["source"])
        load_into(model, d)
        model = model.to(device).eval()
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        members.append((model, cfg, {"folder": d.name, "arch": cfg["arch"],
                                                      "sha256": sha256_of(d / "model.safetensors"),
                                                      **({"source": cfg["source"]} if cfg.get("source") else {})}))
    classes = members[0][1]["classes"]
    for _, cfg, info in members[1:]:
        if cfg["classes"] != classes:
            raise DollError(f"ensemble members disagree on classes ({info['folder']}); train them together")
        if cfg.get("lung_model") != members[0][1].get("lung_model"):
            raise DollError(f"ensemble members disagree on --lung-model ({info['folder']}); train them together")
    return members, classes


def ensemble_plan(folder: Path) -> tuple[int, dict]:
    """How many members a ``train-classifiers`` run in ``folder`` trains (0: no plan to check, no
    config.json or another command's), and its config.json, checked
    (:func:`doll.schema.read_ensemble_config`): it decides, so a damaged one is an error."""
    path = folder / CONFIG_FILE
    config = read_ensemble_config(path) if path.is_file() else {}
    return (config["members"] if config.get("command") == "train-classifiers" else 0), config


def require_complete_ensemble(folder: Path, dirs: list[Path]) -> None:
    """Refuse an ensemble whose `train-classifiers` run did not finish: a member missing
    (the run was killed before it started) or unfinished (read_config checks each member's
    own marker; a member folder without one has not finished its first epoch).

    The folder's config.json decides how many members must be there, so it is checked
    (:func:`doll.schema.read_ensemble_config`): a damaged one, or ``"members"`` that is not an
    integer >= 1, is an error naming the field, never a completeness check skipped. A folder
    without config.json (put together by hand) has no plan to check; nor has one checkpoint
    folder (read_config checks its config.json against the checkpoint schema)."""
    if dirs == [folder] and (folder / MODEL_FILE).exists():
        return  # one checkpoint folder: read_config checks its config.json
    planned, config = ensemble_plan(folder)
    for i in range(planned):
        member = folder / f"member_{i}"
        if member not in dirs:
            raise DollError(f"{folder} is an unfinished run (member {i + 1} of {planned} not started); finish it "
                            "with --resume")
        require_finished(member)
        if not (member / "metrics.json").is_file():  # killed before the member's first epoch ended
            epochs = "?" if config.get("epochs") is None else show(config["epochs"])  # words the message only
            raise DollError(f"{member} is an unfinished run (epoch 0 of {epochs}); finish it with --resume")
