"""End-to-end `doll explain` throughput: where the time of a whole labelling run goes.

``explain_speed.py`` times the IG engine alone; this script times the command a user
runs: phantoms at ``--image-size`` in the CheXpert layout, an ensemble of ``--members``
classifiers trained for ``--epochs`` (weights do not change the cost of IG, so one epoch
is enough), then ``doll.explanation.run.explain`` with the defaults a CheXpert run would use
(``--targets positive``, ``--steps``). It prints one JSON object: the run's
``seconds_by_phase`` (``attribute`` is the IG engine, GPU included; ``distill`` runs on
the same device after it, on the main path; ``write_blocks`` (compressing the rows) runs in
the writer thread; ``wait_for_writer`` and ``assemble`` are CPU time on the main path), the steady-state seconds per image (the run without start-up:
loading the classifiers and decoding the images, which a CheXpert run pays once) and
what that rate means for CheXpert's 191,027 frontal training images with this ensemble.

    # one GPU, the production setting (DenseNet-121, 224 px, 3 members, 16 steps)
    python benchmarks/explain_pipeline.py --device cuda --work /tmp/ep
    # this CPU, small (the figures in benchmarks/README.md)
    python benchmarks/explain_pipeline.py --device cpu --arch resnet18 --image-size 224 --images 512 --steps 1 --work /tmp/ep

``--work`` keeps the phantoms and classifiers for the next run (same size, arch, members);
``--baseline-json`` compares ``steady_s_per_image`` with a stored result.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch
from explain_speed import compare_to_baseline  # the sibling script (its folder is on sys.path when run as a script)

from doll.classification.train import train_classifiers
from doll.data.phantom import make_phantoms
from doll.explanation.run import ExplainSettings, explain
from doll.models.classifier import CLASSIFIER_ARCHS

CHEXPERT_FRONTAL = 191_027  # frontal training images (chexpert_train.csv shipped with torchxrayvision)
STARTUP_PHASES = ("load_classifiers", "decode")  # paid once per run, not per image


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="densenet121", choices=CLASSIFIER_ARCHS)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--images", type=int, default=512, help="phantom images written (80 %% are explained: the train split)")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1, help="classifier training epochs (cost of IG does not depend on them)")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=0, help="doll explain --batch-size (0: its default)")
    p.add_argument("--block", type=int, default=64, help="doll explain --block")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda")
    p.add_argument("--work", default="", help="folder kept between runs (default: a temporary one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline-json", default=None, help="a stored result of this script to compare against")
    return p.parse_args(argv)


def phantom_ensemble(work: Path, *, size: int, images: int, arch: str, members: int, epochs: int, device: str,
                     seed: int = 0) -> tuple[Path, Path, str]:
    """Phantoms in the CheXpert layout and a classifier ensemble trained on them, kept in ``work``
    for the next run with the same settings: (data folder, classifiers folder, their tag)."""
    tag = f"{arch}-{size}px-{images}img-{members}m"
    data, classifiers = work / f"phantoms-{size}px-{images}", work / f"classifiers-{tag}"
    if not (data / "phantom.json").exists():
        make_phantoms(data, n=images, size=size, seed=seed, progress=False)
    if not (classifiers / "metrics.json").exists():
        train_classifiers(dataset="phantom", root=str(data), out=str(classifiers), arch=arch, members=members,
                          epochs=epochs, image_size=size, device=device, seed=seed, overwrite=True, progress=False)
    return data, classifiers, tag


def explain_settings(p: argparse.ArgumentParser, items: list[str], own: tuple[str, ...]) -> dict:
    """``--set KEY=VALUE`` items as keyword arguments of ``doll.explanation.run.explain`` (KEY: a
    field of ExplainSettings that the script does not set itself); a bad one is a usage error."""
    fields = {f.name: f for f in dataclasses.fields(ExplainSettings)}
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields or key in own:
            p.error(f"--set {item!r}: use KEY=VALUE with KEY one of {', '.join(k for k in fields if k not in own)}")
        kind = fields[key].type
        if kind not in ("int", "float", "str"):
            p.error(f"--set {item!r}: {key} ({kind}) cannot be set with --set")
        try:
            settings[key] = {"int": int, "float": float}.get(kind, str)(value)
        except ValueError:
            p.error(f"--set {item!r}: {key} takes a value of type {kind}")
    return settings


def json_main(parse_args, run, argv=None) -> int:
    """A benchmark's main: parse, run with every log on stderr, print the result as one JSON line."""
    args = parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # training and library logs: stdout carries only the JSON
        result = run(args)
    print(json.dumps(result))
    return 0


def run(args: argparse.Namespace, work: Path) -> dict:
    data, classifiers, tag = phantom_ensemble(work, size=args.image_size, images=args.images, arch=args.arch,
                                              members=args.members, epochs=args.epochs, device=args.device,
                                              seed=args.seed)
    m = explain(classifiers=str(classifiers), dataset="phantom", root=str(data), out=str(work / f"labels-{tag}.h5"),
                steps=args.steps, batch_size=args.batch_size, block=args.block, device=args.device,
                seed=args.seed, overwrite=True, progress=False)
    phases = m["seconds_by_phase"]
    startup = sum(phases.get(k, 0.0) for k in STARTUP_PHASES)
    steady = (m["seconds"] - startup) / m["images"]
    main_path_cpu = phases.get("wait_for_writer", 0.0) + phases.get("assemble", 0.0)
    result = {
        "images": m["images"], "targets_per_image": round(m["targets"] / m["images"], 3), "members": m["members"],
        "steps": args.steps, "arch": args.arch, "image_size": args.image_size, "seconds": m["seconds"],
        "seconds_by_phase": phases, "steady_s_per_image": round(steady, 5),
        "attribute_s_per_image_member": round(phases.get("attribute", 0.0) / m["images"] / m["members"], 5),
        "main_path_cpu_ms_per_image": round(1000 * main_path_cpu / m["images"], 2),
        "distill_ms_per_image": round(1000 * phases.get("distill", 0.0) / m["images"], 2),  # on the device, main path
        "writer_thread_ms_per_image": round(1000 * phases.get("write_blocks", 0.0) / m["images"], 2),
        "chexpert_hours_at_this_rate": round(CHEXPERT_FRONTAL * steady / 3600, 2),
        "completeness_rel_error": m.get("completeness_rel_error"),
        "device": "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    for k in ("peak_cuda_mb", "fp32_fallback_chunks"):
        if k in m:
            result[k] = m[k]
    if result["device"] == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # training logs: stdout carries only the JSON result
        if args.work:
            work = Path(args.work)
            work.mkdir(parents=True, exist_ok=True)
            result = run(args, work)
        else:
            with tempfile.TemporaryDirectory(prefix="doll-explain-pipeline-") as tmp:
                result = run(args, Path(tmp))
    if args.baseline_json:
        compare_to_baseline(result, "steady_s_per_image", args.baseline_json, "doll explain")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
