"""Label efficiency as a paired experiment, now a thin wrapper of ``doll study`` (docs/study.md).

New studies: run ``doll study``. This script stays so that the commands quoted in
docs/results.md still run: it maps their flags onto doll study's settings, prints the
equivalent ``doll study`` command on stderr, runs it (``doll.study``, always resuming:
finished cells are reused, never retrained) and prints ``OUT/summary.md``. The output is
doll study's: ``OUT/cells/<init>_<mode>_f<fraction>_s<seed>/``, ``study.json``,
``summary.md``, ``report.html``. Every cell is the ``doll finetune`` run this script made
before; the tables are doll study's.

What the mapping adds to doll study's own defaults (every other flag has doll study's name,
meaning and default):

* ``--inits``: doll study's forms, plus ``doll`` for ``doll=<--pretrained>``;
* ``--reference``: default the first ``random`` arm (doll study: the first init);
* ``--encoder`` / ``--decoder`` / ``--image-size``: default the first pretrained folder's
  network and image size, for every arm (doll study: its own defaults);
* ``--first-seed``: another name of ``--seed`` (which also seeds the bootstrap);
* ``--report``: print ``OUT/summary.md`` and exit.

Refused, each with the alternative named: ``--epochs``, ``--phantom``, ``--rescan``,
``--bootstrap-seed``, ``--busy-seconds``. The folders this script wrote before it ran doll study
(``OUT/label_efficiency.json``, ``OUT/<init>_<mode>_<fraction>/seed_<s>/``, the JSON in
docs/results/le_*) are not doll study outputs: the script of commit ``OLD`` (below), with
that commit's doll, reads and extends them (``--report``, ``--rescan``).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

OLD = "55fd3b9"  # the last commit with the script's own cells, summary and report
OLD_SCRIPT = (f"the script as of commit {OLD} (`git worktree add ../doll-{OLD} {OLD}`, then "
              "`python benchmarks/label_efficiency.py ...` there, with that commit's doll)")
REFUSED = {  # flag: why, and what to run instead
    "epochs": "budgets are in optimiser steps, the same for every cell: use --max-steps N",
    "phantom": "doll study builds no setup: run `doll demo --out D` (its full plan) first, then "
               "--root D/phantoms/anatomy --inits random,doll=D/pretrain",
    "rescan": "doll study reads its cells on every run: the same command again (it resumes) rewrites study.json, "
              "summary.md and report.html",
    "busy_seconds": "doll study locks each cell's folder: a cell another process is training is refused, "
                    "not overwritten",
    "bootstrap_seed": "doll study seeds the bootstrap with --seed",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    same = "as doll study's (default: doll study's)"
    for flag, kind in (("--task", str), ("--dataset", str), ("--root", str), ("--fold", int), ("--fractions", str),
                       ("--modes", str), ("--seeds", int), ("--max-steps", int), ("--val-every", int),
                       ("--batch-size", int), ("--lr", float), ("--bootstrap", int), ("--device", str),
                       ("--out", str)):
        p.add_argument(flag, type=kind, default=None, help=same)
    p.add_argument("--seed", "--first-seed", dest="seed", type=int, default=None, help="the first seed; " + same)
    p.add_argument("--inits", default=None,
                   help="doll study's --inits, plus `doll` for doll=--pretrained (default: random,doll with "
                        "--pretrained, else random)")
    p.add_argument("--pretrained", default="", help="the `doll pretrain` folder of the arm named doll")
    p.add_argument("--reference", default="", help="default: the first random arm, else the first arm")
    for flag in ("--encoder", "--decoder", "--image-size"):
        p.add_argument(flag, type=int if flag == "--image-size" else str, default=None,
                       help="default: the first pretrained folder's, else doll study's")
    p.add_argument("--transfer", default=None, help=same)
    p.add_argument("--pretrained-lr", type=float, default=None, help=same)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--report", action="store_true", help="print OUT/summary.md and exit")
    for name in REFUSED:
        p.add_argument("--" + name.replace("_", "-"), dest=name, nargs="?", const=True, default=None,
                       help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for name, why in REFUSED.items():
        if getattr(a, name) is not None:
            p.error(f"--{name.replace('_', '-')}: {why}")
    if not a.report and not a.root:
        p.error("--root is required")
    return a


def study_settings(a: argparse.Namespace):
    """The doll study settings the flags ``a`` mean (see the module's docstring)."""
    from doll.errors import DollError
    from doll.finetuning.settings import init_is_folder
    from doll.models.checkpoint import read_config
    from doll.models.segmenter import saved_decoder
    from doll.studies.options import StudySettings
    from doll.studies.run import parse_inits

    items = [v.strip() for v in (a.inits or ("random,doll" if a.pretrained else "random")).split(",") if v.strip()]
    if "doll" in items and not a.pretrained:
        raise DollError("--inits doll needs --pretrained DIR (a `doll pretrain` folder), or write doll=DIR")
    inits = ",".join(f"doll={a.pretrained}" if v == "doll" else v for v in items)
    arms = parse_inits(inits)
    given = {k: getattr(a, k) for k in ("task", "dataset", "root", "fold", "fractions", "modes", "seeds", "max_steps",
                                        "val_every", "batch_size", "lr", "bootstrap", "device", "out", "seed",
                                        "encoder", "decoder", "image_size", "transfer", "pretrained_lr")}
    folder = next((x.spec for x in arms if init_is_folder(x.spec)), None)
    if folder:  # the random / imagenet arms get the first pretrained folder's network and size
        config = read_config(folder, kind="segmenter")
        given["encoder"] = a.encoder or config["doll"]["encoder"]
        given["decoder"] = a.decoder or saved_decoder(config)
        given["image_size"] = a.image_size or int(config["doll"].get("image_size") or 0)
    reference = a.reference or next((x.name for x in arms if x.spec == "random"), arms[0].name)
    return StudySettings(inits=inits, reference=reference, resume=True, progress=not a.quiet,
                         **{k: v for k, v in given.items() if v is not None})


def report(out: Path) -> str:
    if (out / "summary.md").is_file():
        return (out / "summary.md").read_text()
    if (out / "label_efficiency.json").is_file():
        raise SystemExit(f"label_efficiency: {out} was written before this script ran doll study; its tables: "
                         f"{OLD_SCRIPT}, with --report --out {out}")
    raise SystemExit(f"label_efficiency: {out / 'summary.md'} does not exist; run the study first")


def main(argv=None) -> dict | None:
    a = parse_args(argv)
    if a.report:
        from doll.studies.options import StudySettings

        sys.stdout.write(report(Path(a.out or StudySettings(root=".").out)))
        return None
    import doll
    from doll.errors import DollError
    from doll.outputs import is_doll_output
    from doll.studies.run import command_line

    try:
        s = study_settings(a)
        out = Path(s.out)
        if (out / "label_efficiency.json").is_file():
            raise DollError(f"{out} holds this script's output from before it ran doll study (label_efficiency.json), "
                            f"whose cells doll study does not reuse: choose another --out, or run {OLD_SCRIPT}")
        log("label_efficiency: running " + command_line(s) + (" --resume" if is_doll_output(out) else ""))
        with contextlib.redirect_stdout(sys.stderr):  # the cells' lines; stdout is the summary
            doc = doll.study(s)
    except DollError as exc:
        raise SystemExit(f"label_efficiency: {exc}") from None
    sys.stdout.write(report(out))
    return doc


if __name__ == "__main__":
    main()
