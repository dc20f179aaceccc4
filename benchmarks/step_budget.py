"""What evaluating costs: a fine-tuning step budget with about ten evaluations vs the same
steps with one evaluation at the end.

Runs ``doll finetune --max-steps N`` twice on the same cell (task, data, fraction, seed):
once with the default cadence (about ten evaluations of the test split, a checkpoint at
each), once with ``--val-every N`` (one). Prints one JSON object: for each run its wall
time, ``train_seconds`` (the optimiser steps alone, from metrics.json), ``eval_seconds``
and the number of evaluations; and ``overhead_ratio`` = wall time with the default
cadence / wall time with one evaluation, and ``ratio_to_bare_steps`` = that wall time / the
optimiser steps' own time (the target: <= 1.5; data loading and start-up count against it). Both runs train the same
weights (evaluation never changes the training), so their final IoU is equal.
With ``--baseline-json FILE`` (an earlier output) it adds ``baseline_ratio`` of the wall times.

    python benchmarks/step_budget.py --root data/phantom/anatomy --image-size 64 --label-fraction 0.05 --max-steps 600
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="jsrt")
    ap.add_argument("--dataset", default="jsrt")
    ap.add_argument("--root", required=True)
    ap.add_argument("--init", default="random")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--label-fraction", type=float, default=0.05)
    ap.add_argument("--max-steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--baseline-json", default=None, help="an earlier output to compare wall times with")
    args = ap.parse_args(argv)
    import doll

    result = {"settings": vars(args), "command": " ".join(["python", *sys.argv])}
    with tempfile.TemporaryDirectory(prefix="doll-step-budget-") as tmp:
        for name, val_every in (("default_cadence", 0), ("one_evaluation", args.max_steps)):
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):  # the stage's progress lines: stdout is the JSON
                m = doll.finetune(task=args.task, dataset=args.dataset, root=args.root, init=args.init,
                                  encoder=args.encoder, image_size=args.image_size, label_fraction=args.label_fraction,
                                  max_steps=args.max_steps, val_every=val_every, batch_size=args.batch_size,
                                  device=args.device, out=str(Path(tmp) / name), progress=False)
            run = m["runs"][0]
            result[name] = {"wall_seconds": round(time.perf_counter() - t0, 2), "steps": m["steps"],
                            "evaluations": len(run["curve"]), "train_seconds": run["train_seconds"],
                            "n_train": m["n_train"], "n_test": m["n_test"], "mean_iou": m["mean_iou"]}
    result["overhead_ratio"] = round(result["default_cadence"]["wall_seconds"]
                                     / result["one_evaluation"]["wall_seconds"], 3)
    result["ratio_to_bare_steps"] = round(result["default_cadence"]["wall_seconds"]
                                          / result["one_evaluation"]["train_seconds"], 3)
    if args.baseline_json:
        base = json.loads(Path(args.baseline_json).read_text())
        result["baseline_ratio"] = round(result["default_cadence"]["wall_seconds"]
                                         / base["default_cadence"]["wall_seconds"], 3)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
