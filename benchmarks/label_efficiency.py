"""Label-efficiency sweep: fine-tuning IoU vs the fraction of labelled training masks.

Fine-tunes over the grid ``--fractions`` x ``--inits`` (``random`` and/or ``doll``, the
``doll pretrain`` folder given by ``--pretrained``) x ``--modes`` (``full``, ``adapter``,
``head``), each cell with ``--seeds`` seeds (``doll.finetune(seeds=...)``), and writes

* ``OUT/<init>_<mode>_<fraction>/``: each cell's ``doll finetune`` run;
* ``OUT/label_efficiency.json``: ``{"settings", "cells", "command"}``;
* ``OUT/label_efficiency.png``: mean IoU (± std over seeds) vs label fraction (log axis),
  one line per init x mode.

One JSON line per cell is printed to stdout as the cells finish.

``--phantom`` builds its own setup under ``OUT/setup`` first (phantoms -> classifier
ensemble -> DoLL labels -> pretraining, with the values of ``doll demo``'s full plan),
skipping every step whose output already exists, and then sweeps
``--root OUT/setup/phantoms/anatomy`` with ``--pretrained OUT/setup/pretrain``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

MODES = ("full", "adapter", "head")
CELL_FIELDS = ("init", "mode", "label_fraction", "n_train", "mean_iou", "mean_iou_std", "mean_dice",
               "trainable_params", "seconds")


def floats(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not vals or any(not 0 < v <= 1 for v in vals):
        raise argparse.ArgumentTypeError(f"label fractions must be in (0, 1], got {text!r}")
    return vals


def names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fractions", type=floats, default=floats("0.05,0.1,0.25,1.0"),
                   help="comma-separated label fractions (default 0.05,0.1,0.25,1.0)")
    p.add_argument("--inits", type=names, default=None,
                   help="comma-separated: random and/or doll (default: random,doll with --pretrained/--phantom, "
                        "else random)")
    p.add_argument("--pretrained", default="", help="the `doll pretrain` folder used for the 'doll' init")
    p.add_argument("--modes", type=names, default=["full", "adapter"], help="comma-separated: full, adapter, head")
    p.add_argument("--seeds", type=int, default=1, help="seeds per cell (finetune's `seeds`)")
    p.add_argument("--seed", type=int, default=0, help="first seed (also the --phantom setup's seed)")
    p.add_argument("--task", default="jsrt")
    p.add_argument("--dataset", default="jsrt")
    p.add_argument("--root", default="", help="the fine-tuning data set's folder")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--encoder", default="",
                   help="encoder for the random init (default: the pretrained network's, else resnet34)")
    p.add_argument("--image-size", type=int, default=0,
                   help="0: the pretrained network's size (all inits alike), else finetune's default (256)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="artifacts/label_efficiency")
    p.add_argument("--phantom", action="store_true",
                   help="build phantoms, classifiers, DoLL labels and a pretrained network under OUT/setup first "
                        "(doll demo's full plan; existing steps are skipped) and sweep them")
    a = p.parse_args(argv)
    if a.inits is None:
        a.inits = ["random", "doll"] if (a.pretrained or a.phantom) else ["random"]
    bad = [i for i in a.inits if i not in ("random", "doll")]
    if bad or not a.inits:
        p.error(f"--inits takes random and/or doll, got {','.join(a.inits)}")
    bad = [m for m in a.modes if m not in MODES]
    if bad or not a.modes:
        p.error(f"--modes takes {', '.join(MODES)}, got {','.join(a.modes)}")
    if a.seeds < 1 or a.epochs < 1:
        p.error("--seeds and --epochs must be positive")
    if a.phantom and (a.root or a.pretrained):
        p.error("--phantom sets --root and --pretrained itself; give neither")
    if not a.phantom:
        if not a.root:
            p.error("--root is required (or --phantom)")
        if "doll" in a.inits and not a.pretrained:
            p.error("--inits doll needs --pretrained DIR (a `doll pretrain` folder)")
    return a


def phantom_setup(out: Path, seed: int, device: str) -> tuple[str, str]:
    """doll demo's full plan up to pretraining, under ``out``; steps already done are skipped."""
    import doll
    from doll.demo import FULL as plan

    out.mkdir(parents=True, exist_ok=True)
    data, cls, labels, pre = out / "phantoms", out / "classifiers", out / "doll_labels.h5", out / "pretrain"
    common = {"device": device, "progress": False, "seed": seed}

    def step(name, done: bool, fn, *a, **k):
        if done:
            print(f"== setup: {name}: exists, skipped", file=sys.stderr, flush=True)
            return
        t = time.time()
        print(f"== setup: {name} ...", file=sys.stderr, flush=True)
        with contextlib.redirect_stdout(sys.stderr):  # the stages' epoch lines; stdout is the table
            fn(*a, **k)
        print(f"== setup: {name} done in {time.time() - t:.0f} s", file=sys.stderr, flush=True)

    step("phantoms", (data / "phantom.json").exists(), doll.make_phantoms, data, n=plan.n, size=plan.size,
         seed=seed, progress=False)
    step("train-classifiers", (cls / "metrics.json").exists(), doll.train_classifiers, dataset="phantom",
         root=str(data), out=str(cls), members=plan.members, epochs=plan.cls_epochs, image_size=plan.size,
         overwrite=True, **common)
    step("explain", labels.exists() and Path(str(labels) + ".metrics.json").exists(), doll.explain,
         classifiers=str(cls), dataset="phantom", root=str(data), out=str(labels), steps=plan.steps,
         overwrite=True, **common)
    step("pretrain", (pre / "metrics.json").exists(), doll.pretrain, labels=str(labels), out=str(pre),
         encoder=plan.encoder, epochs=plan.pretrain_epochs, overwrite=True, **common)
    return str(data / "anatomy"), str(pre)


def plot(cells: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    lines = sorted({(c["init"], c["mode"]) for c in cells})
    fractions = sorted({c["label_fraction"] for c in cells})
    for init, mode in lines:
        row = sorted((c for c in cells if (c["init"], c["mode"]) == (init, mode)), key=lambda c: c["label_fraction"])
        ax.errorbar([c["label_fraction"] for c in row], [c["mean_iou"] for c in row],
                    yerr=[c["mean_iou_std"] for c in row], marker="o" if init == "doll" else "s",
                    linestyle="-" if mode == "full" else "--", capsize=3, label=f"{init} init, {mode}")
    ax.set_xscale("log")
    ax.set_xticks(fractions)
    ax.set_xticklabels([f"{f:g}" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("label fraction (log scale)")
    ax.set_ylabel("mean IoU (test)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> dict:
    a = parse_args(argv)
    import doll
    from doll.models.checkpoint import read_config
    from doll.utils import write_json

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    root, pretrained = a.root, a.pretrained
    if a.phantom:
        root, pretrained = phantom_setup(out / "setup", a.seed, a.device)
    pre_cfg = read_config(pretrained, kind="segmenter")["doll"] if pretrained else {}
    encoder = a.encoder or pre_cfg.get("encoder") or "resnet34"
    image_size = a.image_size or pre_cfg.get("image_size") or 0
    settings = {"task": a.task, "dataset": a.dataset, "root": root, "pretrained": pretrained or None,
                "inits": a.inits, "modes": a.modes, "fractions": a.fractions, "seeds": a.seeds, "seed": a.seed,
                "epochs": a.epochs, "encoder_random_init": encoder, "image_size": image_size, "lr": a.lr,
                "device": a.device, "phantom": a.phantom}
    cells = []
    for init in a.inits:
        for mode in a.modes:
            for frac in a.fractions:
                t = time.time()
                with contextlib.redirect_stdout(sys.stderr):  # epoch lines; stdout is the table
                    r = doll.finetune(task=a.task, dataset=a.dataset, root=root,
                                      init=pretrained if init == "doll" else "random", encoder=encoder, mode=mode,
                                      label_fraction=frac, epochs=a.epochs, lr=a.lr, image_size=image_size,
                                      seeds=a.seeds, seed=a.seed, device=a.device,
                                      out=str(out / f"{init}_{mode}_{frac:g}"),
                                      overwrite=True, progress=False)
                cell = {"init": init, "mode": mode, "label_fraction": frac, "n_train": r["n_train"],
                        "mean_iou": r["mean_iou"], "mean_iou_std": r["mean_iou_std"], "mean_dice": r["mean_dice"],
                        "trainable_params": r["trainable_params"], "seconds": round(time.time() - t, 1)}
                cells.append(cell)
                print(json.dumps(cell), flush=True)
    result = {"settings": settings, "cells": cells, "command": " ".join(sys.argv)}
    write_json(out / "label_efficiency.json", result)
    plot(cells, out / "label_efficiency.png",
         f"{a.task} ({a.dataset}), {a.epochs} epochs, {a.seeds} seed(s), {image_size or 256} px")
    return result


if __name__ == "__main__":
    main()
