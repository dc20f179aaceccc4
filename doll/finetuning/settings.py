"""Stage 4's shared settings and helpers: the options, the network to fine-tune and its
initialisation, the image size, the label subset and the training budget. Every task
module (``segment``, ``seg4cls``, ``mixed``) builds on these; none imports another."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from doll.errors import DollError
from doll.models.adapters import MODES
from doll.models.checkpoint import read_config, read_weights_file
from doll.models.segmenter import (
    DEFAULT_DECODER,
    DEFAULT_ENCODER,
    build_segmenter,
    check_decoder,
    check_encoder,
    check_image_size,
    decoder_of,
    drop_aux_head,
    load_segmenter,
    saved_decoder,
)
from doll.train.engine import EngineSettings
from doll.finetuning.options import FinetuneSettings  # noqa: F401 - doll.finetuning.settings.FinetuneSettings
from doll.finetuning.tasks import check_task_options, task_class
from doll.utils import check_fraction, check_positive


TRANSFERS = ("all", "encoder")


def init_is_folder(init: str) -> bool:
    """Whether ``--init`` names a `doll pretrain` (or finetune) folder rather than random / imagenet:FILE."""
    return init != "random" and not init.startswith("imagenet:")


def check_init(init: str) -> None:
    if init == "imagenet":
        raise DollError("--init imagenet needs the weights file: --init imagenet:/path/to/weights.safetensors "
                        "(weights are never downloaded)")
    if init.startswith("imagenet:") and not init.split(":", 1)[1]:
        raise DollError("--init imagenet: names no file; write --init imagenet:/path/to/weights.safetensors")


def check_settings(s: FinetuneSettings) -> None:
    """Refuse, before anything is written, an unknown --task, options this task would ignore,
    unknown --mode / --decoder / --encoder, bad numbers, and an --image-size the network cannot take."""
    check_task_options(s, task_class(s.task))
    if s.mode not in MODES:
        raise DollError(f"unknown --mode {s.mode!r}; choose one of {', '.join(MODES)}")
    if s.transfer not in TRANSFERS:
        raise DollError(f"unknown --transfer {s.transfer!r}; choose one of {', '.join(TRANSFERS)}")
    if s.transfer != "all" and not init_is_folder(s.init):
        raise DollError("--transfer applies to a pretrained --init folder only")
    check_init(s.init)
    if s.pretrained_lr != 1.0:
        if s.init == "random":
            raise DollError("--pretrained-lr applies to a pretrained --init (a folder or imagenet:FILE) only")
        if s.mode != "full":
            raise DollError(f"--pretrained-lr applies to --mode full only (--mode {s.mode} freezes the pretrained "
                            "layers)")
        check_positive(pretrained_lr=s.pretrained_lr)
    check_fraction(s.label_fraction)
    check_positive(batch_size=s.batch_size, seeds=s.seeds, lr=s.lr, accumulate=s.accumulate)
    if s.max_steps < 0 or s.val_every < 0 or s.epochs < 0:
        raise DollError("--epochs, --max-steps and --val-every must be positive (0: derive them)")
    if init_is_folder(s.init):
        config = read_config(s.init, kind="segmenter")
        decoder, encoder = saved_decoder(config), config["doll"]["encoder"]
        if s.decoder != DEFAULT_DECODER and s.decoder != decoder:
            raise DollError(f"--decoder {s.decoder}: {s.init} holds a {decoder}; leave --decoder out with a "
                            "pretrained --init (the folder fixes its network)")
        if s.encoder != DEFAULT_ENCODER and s.encoder != encoder:
            raise DollError(f"--encoder {s.encoder}: {s.init} holds a {encoder} encoder; leave --encoder out with a "
                            "pretrained --init (the folder fixes its network)")
    else:
        decoder, encoder = check_decoder(s.decoder), check_encoder(s.encoder)
    check_image_size(decoder, encoder, image_size(s))
    if s.init.startswith("imagenet:"):  # read (and refuse) the file before anything is written
        read_weights_file(Path(s.init.split(":", 1)[1]), "--init imagenet:")


def image_size(s: FinetuneSettings) -> int:
    """--image-size, else the pretrained network's, else the phantom's own size, else 256."""
    if s.image_size:
        check_positive(image_size=s.image_size)
        return s.image_size
    if init_is_folder(s.init):
        size = read_config(s.init, kind="segmenter")["doll"].get("image_size")
        if size:
            return int(size)
    if s.dataset == "phantom":
        meta = Path(s.root) / "phantom.json"
        if meta.is_file():  # checked (doll.schema): a size in [16, 4096] when it names one
            from doll.data.phantom import PHANTOM_VERSION
            from doll.schema import read_phantom_meta

            return int(read_phantom_meta(meta, PHANTOM_VERSION).get("size") or 256)
    return 256


def label_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """The sorted indices of the ``fraction`` of ``n`` training images whose masks are used
    (at least one): the one seeded draw every task makes, so that arms with the same seed
    (DoLL init and random init) see the same masks."""
    k = max(1, int(round(fraction * n)))
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])


def budget(s: FinetuneSettings) -> tuple[int, int]:
    """(epochs, max_steps) for the engine: --max-steps, else --epochs, else the task's default
    (its ``default_steps``, else its ``default_epochs``)."""
    if s.max_steps:
        return max(s.epochs, 1), s.max_steps
    if s.epochs:
        return s.epochs, 0
    runner = task_class(s.task)
    return (1, runner.default_steps) if runner.default_steps else (runner.default_epochs, 0)


def engine_settings(s: FinetuneSettings, batch_size: int, monitor: str = "step", eval_split: str = "val") -> EngineSettings:
    """The engine's settings for one network of a fine-tuning run: the run's budget
    (``--max-steps``, else ``--epochs``, else the default), evaluation cadence, learning rate and seed."""
    epochs, max_steps = budget(s)
    return EngineSettings(epochs=epochs, max_steps=max_steps, val_every=s.val_every,
                          batch_size=batch_size, lr=s.lr, seed=s.seed, device=s.device, num_workers=s.num_workers,
                          monitor=monitor, monitor_mode="max", progress=s.progress, accumulate=s.accumulate,
                          eval_split=eval_split)


def load_imagenet_encoder(model, path: str) -> int:
    """Copy matching encoder weights from a local file (safetensors or plain state dict)."""
    p = Path(path)
    state = read_weights_file(p, "--init imagenet:")
    own = model.encoder.state_dict()
    matched = {}
    for k, v in state.items():
        k = k.removeprefix("encoder.")
        if k in own:
            if v.ndim == 4 and v.shape[1] == 3 and own[k].shape[1] == 1:
                v = v.sum(dim=1, keepdim=True)
            if v.shape == own[k].shape:
                matched[k] = v
    if not matched:
        raise DollError(f"no weight in {p} matches the {model.encoder.__class__.__name__} encoder")
    model.encoder.load_state_dict(matched, strict=False)
    return len(matched)


def build_model(s: FinetuneSettings, n_out: int):
    """The network to fine-tune and a description of its initialisation: a new one
    (random, or an ImageNet encoder from a local file), or a pretrained folder's network
    (any decoder) with its auxiliary head dropped and a new head of ``n_out`` outputs."""
    from doll.models.segmenter import replace_head

    if not init_is_folder(s.init):
        model = build_segmenter(s.decoder, s.encoder, n_out)
        info = {"init": s.init, "encoder": s.encoder}
        if s.init.startswith("imagenet:"):
            info["matched_tensors"] = load_imagenet_encoder(model, s.init.split(":", 1)[1])
        return model, info
    model, cfg = load_segmenter(s.init)
    if cfg.get("mode", "full") != "full":
        raise DollError(f"--init {s.init} is a {cfg['mode']}-mode fine-tune; initialise from a `doll pretrain` "
                        "folder or a full fine-tune")
    info = {"init": str(s.init), "encoder": cfg["encoder"], "pretrain_classes": cfg["classes"],
            "image_size": cfg.get("image_size"), "transfer": s.transfer}
    if s.transfer == "encoder":  # the pretrained encoder under a new decoder and head, as random init makes them
        fresh = build_segmenter(decoder_of(model), cfg["encoder"], n_out)
        fresh.encoder.load_state_dict(model.encoder.state_dict())
        return fresh, info
    drop_aux_head(model)
    replace_head(model, n_out)
    return model, info


def pretrained_parameters(model, s: FinetuneSettings) -> list[str]:
    """The names of ``model``'s parameters that ``--init`` filled: every one but the new
    head's with a pretrained folder transferred whole, else the encoder's (``--transfer
    encoder``, imagenet:FILE); none with random init. Call before adapters are attached."""
    if s.init == "random":
        return []
    whole = init_is_folder(s.init) and s.transfer == "all"
    return [n for n, _ in model.named_parameters()
            if (not n.startswith("segmentation_head.") if whole else n.startswith("encoder."))]


def choices(value: str, allowed: tuple[str, ...], option: str) -> list[str]:
    """A comma-separated option value ("all" = every allowed one) checked against ``allowed``."""
    value = str(value or "")
    if value == "all":
        return list(allowed)
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    if not chosen or any(v not in allowed for v in chosen):
        raise DollError(f"unknown {option} {value!r}; choose all or some of {', '.join(allowed)} (comma-separated)")
    return chosen


def check_single_seed_run(s: FinetuneSettings) -> None:
    """The checks every single-seed task (seg4cls, mixed) makes before loading data."""
    if s.seeds != 1:
        raise DollError(f"--task {s.task} runs one seed; use --seed N and repeat the command for more")
