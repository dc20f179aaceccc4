"""How much do DoLL label scores depend on which classifiers made them? One `doll explain`
per ensemble member alone (and per ensemble), each scored by `doll evaluate-labels`.

Classifiers of the same recipe and the same validation AUROC, trained with other seeds
(or the same seed on another run: training is not bit-reproducible across runs), can give
labels of different quality. Judge a label setting by the spread over members, not by
one ensemble. For every member of every ``--classifiers`` folder this script writes the
labels of that member alone; with ``--ensembles`` also those of each folder as a whole.
It prints one JSON object: the scores (IoU at the file's rule, top-k IoU, pointing game,
AP) of each run (with the predicted lung field's own scores, ``field_prior``, when its
labels have a field), their mean, standard deviation, min and max over the members, and
the priors: a random map; the ground-truth lung mask where the data set has lung masks;
the predicted lung field when every run has the same one (members trained with other
lung models, or ``--set lung_model=...``, have their own: see each run's ``field_prior``).

    # COVID-QU-Ex Val COVID-19 (the README's "Run to run" table): three pairs of lung-field
    # classifiers, trained with `doll train-classifiers ... --members 2 --seed 0|2|4`
    python benchmarks/label_seeds.py --classifiers CLS01 CLS23 CLS45 --ensembles \\
        --dataset covidqu --root DIR --split valid --work /tmp/seeds \\
        --set classes=COVID-19 --set smooth=0.1 --set evidence=abnormal
    # phantoms (no download; trains a 2-member ensemble first, in --work)
    python benchmarks/label_seeds.py --ensembles --work /tmp/seeds

``--set KEY=VALUE`` passes any other ``doll explain`` setting.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from explain_pipeline import explain_settings, json_main, phantom_ensemble  # sibling script (its folder is on sys.path)

from doll.explanation.run import explain
from doll.labels.evaluate import evaluate_labels

OWN = ("classifiers", "dataset", "root", "split", "out", "overwrite", "resume", "progress")
SCORES = ("iou", "topk_iou", "pointing", "ap")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classifiers", nargs="*", default=[],
                   help="`doll train-classifiers` folders (default: phantoms and a 2-member ensemble trained in --work)")
    p.add_argument("--ensembles", action="store_true", help="also explain with each folder as a whole")
    p.add_argument("--dataset", default="phantom")
    p.add_argument("--root", default="")
    p.add_argument("--split", default="", help="the split to label, as doll explain --split ('' for all)")
    p.add_argument("--work", required=True, help="folder for the label files (and the phantom set)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other doll explain setting")
    args = p.parse_args(argv)
    if not args.classifiers and args.dataset != "phantom":
        p.error("--classifiers is needed for any data set but the built-in phantoms")
    for folder in args.classifiers:
        if not Path(folder).is_dir():
            p.error(f"--classifiers {folder} is not a folder")
    names = [Path(f).name for f in args.classifiers]
    if len(set(names)) < len(names):  # runs are named after their folders
        p.error(f"--classifiers: two folders have the same name ({', '.join(names)}); rename or link one")
    args.extra = explain_settings(p, args.set, OWN)
    return args


def members_of(folder: Path) -> list[Path]:
    """The member_* folders of an ensemble, or the folder itself when it is one classifier."""
    return sorted(d for d in folder.glob("member_*") if d.is_dir()) or [folder]


def summary(rows: list[dict]) -> dict:
    out = {}
    for k in SCORES:
        v = [r[k] for r in rows]
        out[k] = {"mean": round(statistics.fmean(v), 4), "sd": round(statistics.stdev(v), 4) if len(v) > 1 else 0.0,
                  "min": round(min(v), 4), "max": round(max(v), 4)}
    return out


def run(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    folders, root = [Path(f) for f in args.classifiers], args.root
    if not folders:  # a small phantom set and a 2-member ensemble, kept in --work for the next run
        size = int(args.extra.get("image_size") or 64)
        data, folder, _ = phantom_ensemble(work, size=size, images=160, arch="resnet18", members=2, epochs=4,
                                           device=args.extra.get("device", "auto"))
        folders, root = [folder], str(data)
    runs = [(f"{f.name}/{m.name}", m) for f in folders for m in members_of(f)]
    n_members = len(runs)
    if args.ensembles:
        runs += [(f.name, f) for f in folders]
    scores, priors = {}, {}
    for i, (name, classifiers) in enumerate(runs):
        out = work / f"labels-{i}.h5"
        explain(classifiers=str(classifiers), dataset=args.dataset, root=root, split=args.split, out=str(out),
                overwrite=True, progress=False, **args.extra)
        e = evaluate_labels(str(out), progress=False)
        scores[name] = {k: round(e["mean"][k], 4) for k in SCORES}
        if e.get("field_prior"):
            scores[name]["field_prior"] = {k: round(e["field_prior"][k], 4) for k in SCORES}
        if not priors:  # the same for every run: they depend on the images and the label rule only
            priors = {p: {k: round(e[p][k], 4) for k in SCORES} for p in ("random", "lung_prior") if e.get(p)}
    fields = [r.get("field_prior") for r in scores.values()]
    if fields[0] and all(f == fields[0] for f in fields):
        priors["field_prior"] = fields[0]
    members = [scores[name] for name, _ in runs[:n_members]]
    return {"dataset": args.dataset, "split": args.split, "settings": args.extra, "members": n_members,
            "scores": scores, "over_members": summary(members),
            "over_ensembles": summary([scores[f.name] for f in folders]) if args.ensembles else None,
            "priors": priors}


def main(argv=None) -> int:
    return json_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
