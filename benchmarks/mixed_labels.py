"""Mixed-label sweep: segmentation IoU/F1 of alternating seg/cls training vs segmentation
only, as the share of training images with masks varies.

Runs ``doll finetune --task mixed`` once per ``--fractions`` value (default 1, 5, 10,
25 and 100 %) and writes

* ``OUT/mixed_<fraction>/``: each run's folder (``metrics.json``, models);
* ``OUT/mixed_labels.json``: ``{"settings", "rows", "command"}``, one row per fraction
  and method with ``mean_iou``, ``mean_f1`` and ``mean_auroc``.

One JSON line per row goes to stdout as the runs finish. Example (COVID-QU-Ex, 64 px):

    python benchmarks/mixed_labels.py --dataset covidqu --root DIR --image-size 64 \\
        --epochs 5 --out runs/mixed
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from label_efficiency import floats  # the sibling script (its folder is on sys.path when run as a script)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fractions", type=floats, default=floats("0.01,0.05,0.1,0.25,1.0"))
    p.add_argument("--dataset", default="phantom")
    p.add_argument("--root", required=True, help="the data set's folder")
    p.add_argument("--pooling", default="max,amp-mlp")
    p.add_argument("--init", default="random")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--image-size", type=int, default=0)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    from doll.finetune.run import finetune

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for fraction in a.fractions:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON rows
            m = finetune(task="mixed", dataset=a.dataset, root=a.root, init=a.init, encoder=a.encoder,
                         image_size=a.image_size, epochs=a.epochs, batch_size=a.batch_size, label_fraction=fraction,
                         pooling=a.pooling, seed=a.seed, device=a.device, out=str(out / f"mixed_{fraction:g}"),
                         overwrite=True, progress=False)
        for method in m["mean_iou"]:
            row = {"label_fraction": fraction, "n_masks": m["n_masks"], "n_train": m["n_train"], "method": method,
                   "mean_iou": m["mean_iou"][method], "mean_f1": m["mean_f1"][method],
                   "mean_auroc": m["mean_auroc"][method], "seconds": m["seconds"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    doc = {"settings": vars(a), "rows": rows, "command": " ".join(["python", *sys.argv])}
    (out / "mixed_labels.json").write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
