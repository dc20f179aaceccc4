"""``doll demo``: the whole DoLL pipeline on built-in phantoms, with a report.

phantoms -> classifier ensemble -> IG explanations distilled into DoLL labels ->
label quality vs ground truth -> PSPNet pretrained on the labels -> fine-tuned on the
phantom anatomy (JSRT layout) with few masks, from the DoLL network and from random
init (same label fraction, seed and schedule), once with every weight trained and once
with small adapters on a frozen network -> report.json + report.html.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from doll.classification.train import train_classifiers
from doll.data.phantom import make_phantoms
from doll.explanation.run import explain
from doll.labels.evaluate import evaluate_labels
from doll.outputs import releases_outputs
from doll.pretraining.train import pretrain
from doll.report.html import write_report
from doll.finetuning.run import finetune
from doll.train.metrics import bootstrap_interval
from doll.utils import prepare_out_dir, write_json

MODES = ("full", "adapter")
MODE_NAMES = {"full": "full fine-tuning", "adapter": "adapters"}


def finetune_folder(mode: str, name: str) -> str:
    return f"finetune_{name}" if mode == "full" else f"finetune_{mode}_{name}"


@dataclass
class DemoPlan:
    n: int
    size: int
    members: int
    cls_epochs: int
    steps: int
    encoder: str
    pretrain_epochs: int
    finetune_epochs: int
    label_fraction: float


QUICK = DemoPlan(n=160, size=64, members=2, cls_epochs=6, steps=8, encoder="resnet18", pretrain_epochs=6,
                 finetune_epochs=15, label_fraction=0.1)
FULL = DemoPlan(n=480, size=64, members=2, cls_epochs=12, steps=8, encoder="resnet18", pretrain_epochs=12,
                finetune_epochs=25, label_fraction=0.1)


@releases_outputs
def demo(out: str = "artifacts/demo", quick: bool = False, seed: int = 0, device: str = "auto",
         overwrite: bool = True, progress: bool = True) -> dict:
    plan = QUICK if quick else FULL
    t0 = time.time()
    # an earlier demo is replaced (only what doll wrote there; anything else stops it)
    out_dir = prepare_out_dir(out, overwrite=overwrite, command="demo", holds="an earlier demo")
    write_json(out_dir / "config.json", {"command": "demo", "quick": quick, "seed": seed, "device": device,
                                          "plan": plan.__dict__})
    timings = {}

    def step(name, fn, *a, **k):
        t = time.time()
        print(f"== {name}", flush=True)
        r = fn(*a, **k)
        timings[name] = round(time.time() - t, 1)
        return r

    data = out_dir / "phantoms"
    step("phantoms", make_phantoms, data, n=plan.n, size=plan.size, seed=seed, progress=progress)
    common = {"device": device, "progress": progress, "seed": seed}
    cls = step("train-classifiers", train_classifiers, dataset="phantom", root=str(data), out=str(out_dir / "classifiers"),
               members=plan.members, epochs=plan.cls_epochs, image_size=plan.size, **common)
    labels = str(out_dir / "doll_labels.h5")
    exp = step("explain", explain, classifiers=str(out_dir / "classifiers"), dataset="phantom", root=str(data),
               out=labels, steps=plan.steps, **common)
    ev = step("evaluate-labels", evaluate_labels, labels, progress=progress)
    write_json(out_dir / "label_quality.json", ev)
    pre = step("pretrain", pretrain, labels=labels, out=str(out_dir / "pretrain"), encoder=plan.encoder,
               epochs=plan.pretrain_epochs, **common)
    ft = {}
    for mode in MODES:  # every weight, then small adapters on a frozen network: same masks, seed and schedule
        for name, init in (("doll_init", str(out_dir / "pretrain")), ("random_init", "random")):
            ft[mode, name] = step(f"finetune ({MODE_NAMES[mode]}, {name})", finetune, task="jsrt", dataset="jsrt",
                                  root=str(data / "anatomy"), init=init, encoder=plan.encoder, mode=mode,
                                  out=str(out_dir / finetune_folder(mode, name)), label_fraction=plan.label_fraction,
                                  epochs=plan.finetune_epochs, image_size=plan.size, **common)

    def arm(mode, name):
        r = ft[mode, name]
        return {"mean_iou": r["mean_iou"], "mean_dice": r["mean_dice"], "per_structure": r["per_structure"],
                "curve": r["runs"][0]["curve"], "trainable_params": r.get("trainable_params")}

    def verdict(mode, against=None):
        """DoLL init in ``mode`` against ``against`` (default: random init in the same mode), paired
        over the test images: a tie unless the 95 % interval of the difference excludes 0."""
        other = against or (mode, "random_init")
        a, b = ft[mode, "doll_init"], ft[other]
        diff = (np.asarray(a["runs"][0]["per_image_iou"]).mean(axis=1)
                - np.asarray(b["runs"][0]["per_image_iou"]).mean(axis=1))
        lo, hi = bootstrap_interval(diff) or (float("nan"), float("nan"))
        than = ("random init" if other[0] == mode else
                f"full fine-tuning from random init ({b['trainable_params']:,} trainable weights)")
        numbers = (f"{a['mean_iou']:.3f} vs {b['mean_iou']:.3f} mean IoU, difference {diff.mean():+.3f}, 95 % "
                   f"interval over test images [{lo:+.3f}, {hi:+.3f}], one seed")
        if lo > 0:
            return f"DoLL init scored higher than {than} ({numbers})"
        if hi < 0:
            return f"DoLL init scored lower than {than} ({numbers})"
        return f"a tie between DoLL init and {than} ({numbers}; the interval holds 0)"

    report = {
        "classifiers": {"mean_auroc": cls["mean_auroc"], "per_class_auroc": cls["per_class_auroc"],
                        "members": plan.members, "history": {m["name"]: m["history"] for m in cls["members"]}},
        "labels": {"mean_iou": ev["mean_iou"], "random_iou": ev["random_iou"], "mean": ev["mean"],
                   "random": ev["random"], "label_rule": ev["label_rule"], "pairs": ev["pairs"],
                   "explain_seconds_per_image": exp.get("seconds_per_image"),
                   "completeness_rel_error": exp.get("completeness_rel_error")},
        "pretrain": {"val_iou": pre["val_iou"], "classes": pre["classes"], "history": pre["history"]},
        # full fine-tuning at the top level; the adapter arms under "adapter", the same keys
        "finetune": {"task": "jsrt", "label_fraction": plan.label_fraction, "mode": "full",
                     "n_train": ft["full", "doll_init"]["n_train"], "n_test": ft["full", "doll_init"]["n_test"],
                     "doll_init": arm("full", "doll_init"), "random_init": arm("full", "random_init"),
                     "verdict": verdict("full"),
                     "adapter": {"mode": "adapter", "doll_init": arm("adapter", "doll_init"),
                                 "random_init": arm("adapter", "random_init"), "verdict": verdict("adapter"),
                                 # what a user would do instead of adapters: fine-tune every weight from scratch
                                 "verdict_vs_full_random": verdict("adapter", ("full", "random_init"))},
                     "note": "one seed on synthetic phantoms: a smoke test of the pipeline, not a result; "
                             "docs/results.md has the paired-seed studies"},
        "quick": quick, "plan": plan.__dict__, "timings": timings, "seconds": round(time.time() - t0, 1),
    }
    write_json(out_dir / "report.json", report)
    figures = {(f"pred_{name}.png" if mode == "full" else f"pred_{mode}_{name}.png"):
               out_dir / finetune_folder(mode, name) / "model" for mode in MODES for name in ("doll_init", "random_init")}
    write_report(out_dir, report, labels, data, figures)
    write_json(out_dir / "metrics.json", report)
    print(f"== done in {report['seconds']:.0f} s. Full fine-tuning: {verdict('full')}. Adapters: "
          f"{report['finetune']['adapter']['verdict_vs_full_random']}. One seed: a smoke test, not a result. "
          f"Report: {out_dir / 'report.html'}")
    return report

