"""Stage 2: explain every classifier of an ensemble and distil the maps into a DoLL label file."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from doll.data import labels_of, load_split
from doll.errors import DollError
from doll.explain.base import (
    NORMAL_CLASSES,
    EvidenceOutput,
    check_evidence,
    make_explainer,
    normal_class,
)
from doll.explain.distill import distill, require_finite
from doll.explain.ig import check_precision, default_batch_size
from doll.labels.rule import DEFAULT_RULE, check_rule
from doll.labels.store import Blocks, PartsWriter, is_label_file, is_parts_folder, write_label_file
from doll.models.checkpoint import load_into, read_config, require_finished
from doll.models.classifier import build_classifier
from doll.models.lung_field import (
    INPUT_MARGIN,
    SALIENCY_MARGIN,
    check_field_margin,
    lung_field,
    lung_model_config,
    mask_images,
    predict_lung_masks,
)
from doll.models.segmenter import (
    DECODERS,
    DEFAULT_DECODER,
    DEFAULT_ENCODER,
    nearest_sizes,
)
from doll.outputs import releases_outputs
from doll.train import distributed as dist
from doll.utils import (
    RUN_ONLY_SETTINGS,
    RunOptions,
    Stopwatch,
    check_positive,
    prepare_out_file,
    remove_leftover_temporaries,
    resolve_device,
    resolve_paths,
    to_tensor,
    write_json,
)

TARGET_MODES = ("positive", "predicted", "all")
SIGNS = ("positive", "absolute")
NOT_LOCALISED = NORMAL_CLASSES  # classes never explained unless --classes names them


@dataclass
class ExplainSettings(RunOptions):
    classifiers: str = "artifacts/classifiers"
    dataset: str = "phantom"
    root: str = ""
    out: str = "artifacts/doll_labels.h5"
    split: str = "train"
    method: str = "ig"
    steps: int = 16
    baseline: str = "zero"
    evidence: str = "class"  # what a map explains: class, abnormal or contrast (see doll.explain.base)
    targets: str = "positive"
    target_threshold: float = 0.5
    classes: str = ""  # comma-separated subset; default all but "No Finding"
    sign: str = "positive"
    smooth: float = 0.03
    label_rule: str = DEFAULT_RULE
    lung_model: str = ""  # a `doll finetune --task lung` model folder: restrict saliency to its lung field
    field_margin: float = SALIENCY_MARGIN  # dilation of that field, as a fraction of the image size
    batch_size: int = 0  # interpolated images per forward pass; 0: 256 on a GPU, 16 on the CPU
    precision: str = "auto"  # IG on CUDA: auto (float16 autocast), fp16, bf16 or fp32
    block: int = 64  # images per resumable block
    image_size: int = 0  # 0: the classifiers' own size

    def __post_init__(self):
        super().__post_init__()
        if not str(self.root).strip():  # "" would be the current folder
            raise DollError("--root is required: the folder you unpacked the data set into")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_fingerprint(items, labels: np.ndarray) -> dict:
    """The images a run explains (their ids, in order) and their labels, hashed: a resume
    after images were added, removed or relabelled is refused instead of putting the old
    blocks' maps on other images."""
    h = hashlib.sha256("\n".join(it.id for it in items).encode())
    h.update(np.ascontiguousarray(np.nan_to_num(labels, nan=9.0), dtype=np.float32).tobytes())
    return {"images": len(items), "sha256": h.hexdigest()}


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
        model = build_classifier(cfg["arch"], len(cfg["classes"]))
        load_into(model, d)
        model = model.to(device).eval()
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        members.append((model, cfg, {"folder": d.name, "arch": cfg["arch"],
                                                      "sha256": _sha256(d / "model.safetensors")}))
    classes = members[0][1]["classes"]
    for _, cfg, info in members[1:]:
        if cfg["classes"] != classes:
            raise DollError(f"ensemble members disagree on classes ({info['folder']}); train them together")
        if cfg.get("lung_model") != members[0][1].get("lung_model"):
            raise DollError(f"ensemble members disagree on --lung-model ({info['folder']}); train them together")
    return members, classes


def require_complete_ensemble(folder: Path, dirs: list[Path]) -> None:
    """Refuse an ensemble whose `train-classifiers` run did not finish: a member missing
    (the run was killed before it started) or unfinished (read_config checks each member's
    own marker; a member folder without one has not finished its first epoch)."""
    try:
        config = json.loads((folder / "config.json").read_text())
        planned = int(config.get("members", 0)) if config.get("command") == "train-classifiers" else 0
    except (OSError, ValueError, TypeError, AttributeError):
        return  # not a train-classifiers folder (one checkpoint folder, or put together by hand)
    for i in range(planned):
        member = folder / f"member_{i}"
        if member not in dirs:
            raise DollError(f"{folder} is an unfinished run (member {i + 1} of {planned} not started); finish it "
                            "with --resume")
        require_finished(member)
        if not (member / "metrics.json").is_file():  # killed before the member's first epoch ended
            raise DollError(f"{member} is an unfinished run (epoch 0 of {config.get('epochs', '?')}); finish it "
                            "with --resume")


def completeness_summary(errors: np.ndarray) -> dict[str, float]:
    """Median, 90th percentile and max of IG's relative completeness errors."""
    return {"median": float(np.median(errors)), "p90": float(np.quantile(errors, 0.9)), "max": float(errors.max())}


COMPLETENESS_P90_LIMIT = 0.25  # IG's attributions should sum to f(x) - f(baseline): beyond 25 % off, maps are rough


def completeness_warning(summary: dict[str, float], steps: int) -> str:
    """A warning when IG's completeness error (90th percentile) says the integral was taken
    with too few steps, with the --steps that would fix it ('' when it is fine). The error
    of the quadrature falls about as 1/steps (Riemann) or faster, so the suggestion scales
    --steps by the error's ratio to the limit, at least doubling it, capped at 256."""
    p90 = summary.get("p90", 0.0)
    if not p90 > COMPLETENESS_P90_LIMIT:
        return ""
    suggested = int(min(256, max(2 * steps, math.ceil(steps * p90 / COMPLETENESS_P90_LIMIT))))
    return (f"IG completeness error is large (p90 {p90:.2f}, median {summary['median']:.2f}, max {summary['max']:.1f}: "
            f"the maps do not add up to the prediction they explain) at --steps {steps}; try --steps {suggested} "
            "(docs/how-labels-are-made.md)")


def select_targets(raw: np.ndarray, probs: np.ndarray, mode: str, threshold: float, allowed: np.ndarray) -> list[list[int]]:
    if mode == "positive":
        chosen = raw == 1
    elif mode == "predicted":
        chosen = probs >= threshold
    elif mode == "all":
        chosen = np.ones_like(probs, bool)
    else:
        raise DollError(f"unknown --targets {mode!r}; choose one of {', '.join(TARGET_MODES)}")
    chosen &= allowed[None, :]
    return [np.flatnonzero(row).tolist() for row in chosen]


@releases_outputs
def explain(settings: ExplainSettings | None = None, **kwargs) -> dict:
    """Write the DoLL label file ``out``; returns (and writes to ``<out>.metrics.json``) run metrics."""
    s = settings or ExplainSettings(**kwargs)
    resolve_paths(s, "root", "classifiers", "lung_model")
    check_positive(steps=s.steps, block=s.block)
    if s.batch_size < 0:
        raise DollError(f"--batch-size must be positive (or 0 for the default), got {s.batch_size}")
    check_rule(s.label_rule)
    if s.lung_model:
        lung_model_config(s.lung_model)
    check_field_margin(s.field_margin)
    check_precision(s.precision)
    if s.sign not in SIGNS:
        raise DollError(f"unknown --sign {s.sign!r}; choose one of {', '.join(SIGNS)}")
    check_evidence(s.evidence)
    if s.targets not in TARGET_MODES:
        raise DollError(f"unknown --targets {s.targets!r}; choose one of {', '.join(TARGET_MODES)}")
    out = Path(s.out)
    if out.suffix not in (".h5", ".hdf5"):
        raise DollError(f"--out {out} should be a .h5 file")
    if out.is_dir():  # found now, not after hours of explaining
        raise DollError(f"--out {out} is a folder; name the .h5 file to write")
    if out.parent.exists() and not out.parent.is_dir():
        raise DollError(f"--out {out}: {out.parent} is a file, not a folder")
    if out.exists() and not s.overwrite:
        raise DollError(f"{out} already exists; pass --overwrite to replace it")
    parts_folder = Path(str(out) + ".parts")
    if dist.is_main():  # one writer per label file; the temporaries of a killed run go
        prepare_out_file(out, overwrite=s.overwrite, is_ours=is_label_file, what="label file",
                         inputs={"--classifiers": s.classifiers, "--root": s.root, "--lung-model": s.lung_model or None})
        if parts_folder.is_dir() and s.overwrite and not s.resume and not is_parts_folder(parts_folder):
            raise DollError(f"{parts_folder} holds files that are not an unfinished doll explain run; refusing to "
                            "delete it with --overwrite")
        remove_leftover_temporaries(parts_folder)
    t0 = time.time()
    watch = Stopwatch()  # where the time goes: metrics["seconds_by_phase"]
    device = dist.init(resolve_device(s.device))
    if device.type == "cuda":  # peak_cuda_mb is this command's, not earlier work's in the same process
        torch.cuda.reset_peak_memory_stats(device)
    s.batch_size = s.batch_size or default_batch_size(device)
    with watch("load_classifiers"):
        members, classes = load_ensemble(s.classifiers, device)
    size = s.image_size or members[0][1]["image_size"]
    multiple, near = nearest_sizes(DEFAULT_DECODER, DEFAULT_ENCODER, size)
    if near and dist.is_main():  # labels are made all the same (another decoder may take them), but say so now
        print(f"warning: labels of {size} px cannot be pretrained on: doll pretrain's {DECODERS[DEFAULT_DECODER]} "
              f"needs a multiple of {multiple}; explain with --image-size {' or '.join(map(str, near))} to pretrain "
              "on them", file=sys.stderr)
    explainer = make_explainer(s.method, steps=s.steps, baseline=s.baseline, batch_size=s.batch_size,
                               precision=s.precision, seed=s.seed)
    with watch("decode"):
        fmt, arrays = load_split(s.dataset, s.root, s.split or None, size, progress=s.progress and dist.is_main())
    if list(fmt.classes) != list(classes):
        raise DollError(f"the classifiers know {len(classes)} classes ({', '.join(classes[:3])}...) but dataset "
                        f"{s.dataset!r} has {len(fmt.classes)} ({', '.join(fmt.classes[:3])}...); use matching data")
    wanted = [c.strip() for c in s.classes.split(",") if c.strip()] or [c for c in classes if c not in NOT_LOCALISED]
    unknown = [c for c in wanted if c not in classes]
    if unknown:
        raise DollError(f"--classes names unknown class(es) {', '.join(unknown)}; known: {', '.join(classes)}")
    allowed = np.array([c in wanted for c in classes])
    normal = normal_class(classes, s.evidence)
    if normal is not None and allowed[normal]:
        raise DollError(f"--evidence {s.evidence} explains the other classes against {classes[normal]!r}; "
                        f"leave {classes[normal]!r} out of --classes")
    raw = labels_of(arrays, len(classes))
    n = len(arrays.items)

    # classifiers trained with --lung-model see the lung field only: explain them on the same inputs
    trained_field = members[0][1].get("lung_model") or ""
    # recorded absolute (resolve_paths), so that refine and evaluate-labels find it from any folder
    field_model = s.lung_model or trained_field
    with watch("lung_field"):
        masks = predict_lung_masks(field_model, arrays.images, device, s.batch_size) if field_model else None
        fields = None if masks is None else np.stack([lung_field(m, s.field_margin) for m in masks])  # x saliency
        inputs = arrays.images
        if trained_field:
            if field_model != trained_field:
                masks = predict_lung_masks(trained_field, arrays.images, device, s.batch_size)
            inputs = mask_images(arrays.images, np.stack([lung_field(m, INPUT_MARGIN) for m in masks]))

    # ensemble probabilities (cheap: one forward per image and member)
    probs = np.zeros((n, len(classes)), np.float32)
    with torch.no_grad(), watch("probabilities"):
        for i in range(0, n, s.batch_size):
            x = to_tensor(inputs[i:i + s.batch_size]).to(device)
            probs[i:i + len(x)] = np.mean([torch.sigmoid(m(x).float()).cpu().numpy() for m, _, _ in members], axis=0)
    targets = select_targets(raw, probs, s.targets, s.target_threshold, allowed)

    run_settings = {k: v for k, v in asdict(s).items() if k not in RUN_ONLY_SETTINGS}
    run_settings["members"] = [info for _, _, info in members]
    run_settings["field_model"] = field_model  # the lung model whose field shaped the saliency, if any
    # --resume continues only the same run on the same images; --batch-size only bounds memory
    # (the advice after running out of GPU memory is to halve it and resume)
    resume_key = {**{k: v for k, v in run_settings.items() if k != "batch_size"},
                  "data": data_fingerprint(arrays.items, raw)}
    if s.overwrite and not s.resume and dist.is_main():
        shutil.rmtree(parts_folder, ignore_errors=True)
    dist.barrier()  # no rank writes a block before rank 0 has cleared the old ones
    parts = PartsWriter(str(out) + ".parts", resume_key, resume=s.resume, owner=dist.is_main())
    parts.expect(n=n, block=s.block, classes=len(classes), size=size, members=len(members))  # blocks read back fit
    names = [info["folder"] for _, _, info in members]
    dist.barrier()
    blocks = list(range((n + s.block - 1) // s.block))
    world, rank = (dist.world_size(), dist.rank()) if dist.active() else (1, 0)
    mine = blocks[rank::world]  # blocks are dealt round-robin to the torchrun processes
    todo = [b for b in mine if not parts.has(b)]
    # the bar counts images, each member's share as it is explained (per batch of images, not per block)
    bar = tqdm(total=sum(min(s.block, n - b * s.block) for b in todo), desc=f"explaining ({s.method})",
               unit="img", disable=not (s.progress and dist.is_main()),
               bar_format="{l_bar}{bar}| {n:.0f}/{total} [{elapsed}<{remaining}, {rate_fmt}]")
    fallbacks = 0  # chunks whose float16 gradients overflowed and were redone in float32 (this process)

    def finish_block(b: int, lo: int, tg: list[list[int]], per_member: list, completeness: list[list[float]]) -> None:
        """Distil a block's maps and write it (in the writer thread, while the next block is explained)."""
        tmask = np.zeros((len(tg), len(classes)), bool)
        maps = []  # the explained classes' saliency, in the row-major order of tmask
        with watch("distill"):
            for j, t in enumerate(tg):
                if t:  # no map with NaN becomes a label
                    require_finite([m[j] for m in per_member], f"image {lo + j} ({arrays.items[lo + j].id})", names)
                    sal = distill([m[j] for m in per_member], s.sign, s.smooth, None if fields is None else fields[lo + j])
                    maps.extend(sal[np.argsort(t)])
                    tmask[j, t] = True
            maps = np.stack(maps) if maps else np.zeros((0, size, size), np.uint8)
        with watch("write_blocks"):
            parts.write(b, maps=maps, targets=tmask, completeness=np.array(completeness, np.float32))  # (members, targets)

    # One writer thread: block k is distilled and written while block k+1 is explained (the
    # GPU is not kept waiting for the CPU work; at most one finished block waits in memory).
    pending = None  # (future, images in the block)

    def wait_for_writer() -> None:
        if pending is not None:
            with watch("wait_for_writer"):
                pending[0].result()  # re-raises the writer's errors here

    with ThreadPoolExecutor(1, thread_name_prefix="doll-writer") as writer:
        for b in todo:
            completeness: list[list[float]] = []  # per member, its targets' IG completeness errors
            lo, hi = b * s.block, min(n, (b + 1) * s.block)
            x = to_tensor(inputs[lo:hi]).to(device)
            tg = targets[lo:hi]
            # --evidence abnormal gives every class of an image the same map: explain it once
            once = [t[:1] for t in tg] if s.evidence == "abnormal" else tg
            per_member = []
            explained = max(1, sum(1 for t in once if t))  # images the explainer works on (those with targets)
            for k, (model, _, _) in enumerate(members):
                explainer.stats.clear()
                explainer.reseed(b, k)
                share = (hi - lo) / explained / len(members)  # bar images per image explained by this member
                moved = [0.0]

                def advance(count: float, share=share, moved=moved) -> None:
                    moved[0] += count * share
                    bar.update(count * share)

                explainer.progress = advance
                with watch("attribute"):
                    maps_m = explainer.attribute(EvidenceOutput(model, s.evidence, normal), x, once)
                bar.update((hi - lo) / len(members) - moved[0])  # the rest (all of it, for an explainer that never reports)
                per_member.append([np.repeat(m, len(t), 0) for m, t in zip(maps_m, tg)] if once is not tg else maps_m)
                completeness.append(explainer.stats.get("completeness_rel_error", []))
                fallbacks += len(explainer.stats.get("fp32_fallbacks", []))
            wait_for_writer()
            pending = (writer.submit(finish_block, b, lo, tg, per_member, completeness), hi - lo)
        wait_for_writer()
    bar.close()
    dist.barrier()

    metrics = {"command": "explain", "images": n, "targets": int(sum(map(len, targets))),
               "targets_per_class": dict(zip(classes, np.array([[c in t for c in range(len(classes))] for t in targets]).sum(0).tolist() if n else [])),
               "method": s.method, "steps": s.steps, "members": len(members), "label_rule": s.label_rule}
    if dist.is_main():
        tmask = np.zeros((n, len(classes)), bool)
        comp = []
        for b in blocks:
            if not parts.has(b):
                raise DollError(f"block {b} of the run (explained by rank {b % world}) is missing from {parts.folder}; "
                                + ("under torchrun on several machines --out must be on a file system they all share"
                                   if world > 1 else "run again with --resume"))
            z = parts.read(b, ("targets", "completeness"))
            tmask[b * s.block:b * s.block + len(z["targets"])] = z["targets"]
            comp.append(z["completeness"].reshape(len(members), -1))  # (members, targets of the block)

        def saliency_pieces():  # one block in memory at a time
            for b in blocks:
                z = parts.read(b, ("targets", "maps"))
                piece = np.zeros((len(z["targets"]), len(classes), size, size), np.uint8)
                piece[z["targets"]] = z["maps"]
                yield b * s.block, piece

        comp = np.concatenate(comp, axis=1) if comp else np.zeros((len(members), 0))
        if s.method.startswith("ig") and comp.size:
            metrics["completeness_rel_error"] = completeness_summary(comp)
            if len(members) > 1:  # one member's path can be much harder to integrate than the others'
                metrics["completeness_rel_error_by_member"] = {
                    info["folder"]: completeness_summary(c) for (_, _, info), c in zip(members, comp)}
            warning = completeness_warning(metrics["completeness_rel_error"], s.steps)
            if warning:
                metrics["warnings"] = [warning]
                print(f"warning: {warning}", file=sys.stderr)
        attrs = {"classes": classes, "method": s.method, "settings": run_settings, "label_rule": s.label_rule,
                 "classifiers": run_settings["members"], "image_size": size, "dataset": s.dataset,
                 "root": str(fmt.root), "split": s.split}
        with watch("assemble"):
            write_label_file(out, {"saliency": Blocks((n, len(classes), size, size), saliency_pieces()), "targets": tmask, "labels": raw, "probs": probs,
                                   "images": np.asarray(arrays.images), "paths": [it.id for it in arrays.items],
                                   "done": np.ones(n, bool)}, attrs)
        shutil.rmtree(parts.folder, ignore_errors=True)
        metrics["seconds"] = round(time.time() - t0, 2)
        metrics["seconds_per_image"] = round(metrics["seconds"] / max(n, 1), 4)
        metrics["seconds_by_phase"] = watch.seconds()  # this process's; attribute includes the GPU's time
        if device.type == "cuda":
            metrics["fp32_fallback_chunks"] = fallbacks
            metrics["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        write_json(str(out) + ".config.json", {"command": "explain", **asdict(s)})
        write_json(str(out) + ".metrics.json", metrics)
    dist.barrier()
    return metrics
