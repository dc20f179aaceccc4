"""Stage 2: explain every classifier of an ensemble and distil the maps into a DoLL label file."""
from __future__ import annotations

import hashlib
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
from doll.explanation.base import (
    NORMAL_CLASSES,
    EvidenceOutput,
    check_evidence,
    diagnostics_of,
    make_explainer,
    normal_class,
)
from doll.explanation.distill import MAPS_PER_STEP, SIGNS, distill_maps
from doll.explanation.ig import check_precision, default_batch_size
from doll.explanation.settings import ExplainSettings
from doll.labels.rule import check_rule
from doll.labels.store import (
    Blocks,
    PartsWriter,
    is_label_file,
    is_parts_folder,
    saliency_row_chunks,
    write_label_file,
)
from doll.models.ensemble import load_ensemble
from doll.models.lung_field import (
    INPUT_MARGIN,
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
NOT_LOCALISED = NORMAL_CLASSES  # classes never explained unless --classes names them


def data_fingerprint(items, labels: np.ndarray) -> dict:
    """The images a run explains (their ids, in order) and their labels, hashed: a resume
    after images were added, removed or relabelled is refused instead of putting the old
    blocks' maps on other images."""
    h = hashlib.sha256("\n".join(it.id for it in items).encode())
    h.update(np.ascontiguousarray(np.nan_to_num(labels, nan=9.0), dtype=np.float32).tobytes())
    return {"images": len(items), "sha256": h.hexdigest()}


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


@dataclass
class Job:
    """What one explain run works on, prepared once by :func:`prepare_job`: the ensemble,
    the images (as the classifiers see them), the lung fields that shape the saliency,
    the ensemble's probabilities and the targets to explain."""
    s: ExplainSettings
    out: Path
    device: torch.device
    members: list  # (model, config, info) per ensemble member
    classes: list[str]
    size: int
    fmt: object  # the data set format (its root is recorded)
    arrays: object  # the decoded split: items, images
    raw: np.ndarray  # image labels (N, C)
    inputs: np.ndarray  # what the classifiers see: the images, lung-masked where they were trained so
    fields: np.ndarray | None  # per image, the lung field that multiplies the saliency
    field_model: str
    probs: np.ndarray  # ensemble probabilities (N, C)
    targets: list[list[int]]  # per image, the classes to explain
    normal: int | None  # the normal class --evidence abnormal|contrast explains against
    watch: Stopwatch

    @property
    def n(self) -> int:
        return len(self.arrays.items)

    @property
    def member_names(self) -> list[str]:
        return [info["folder"] for _, _, info in self.members]


def check_settings(s: ExplainSettings) -> Path:
    """Refuse bad settings before anything is read or written; returns the label file's path."""
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
    return out


def prepare_output(s: ExplainSettings, out: Path) -> Path:
    """Lock the label file (one writer), refuse a replacement doll may not make, and remove
    what a killed run left half-written; returns the folder of its resumable blocks."""
    parts_folder = Path(str(out) + ".parts")
    if dist.is_main():
        prepare_out_file(out, overwrite=s.overwrite, is_ours=is_label_file, what="label file",
                         inputs={"--classifiers": s.classifiers, "--root": s.root, "--lung-model": s.lung_model or None})
        if parts_folder.is_dir() and s.overwrite and not s.resume and not is_parts_folder(parts_folder):
            raise DollError(f"{parts_folder} holds files that are not an unfinished doll explain run; refusing to "
                            "delete it with --overwrite")
        remove_leftover_temporaries(parts_folder)
    return parts_folder


def prepare_job(s: ExplainSettings, out: Path, device: torch.device, watch: Stopwatch) -> Job:
    """Load the ensemble and the images, check they fit each other and --classes, predict the
    lung fields and the probabilities, and choose the targets."""
    with watch("load_classifiers"):
        members, classes = load_ensemble(s.classifiers, device)
    size = s.image_size or members[0][1]["image_size"]
    multiple, near = nearest_sizes(DEFAULT_DECODER, DEFAULT_ENCODER, size)
    if near and dist.is_main():  # labels are made all the same (another decoder may take them), but say so now
        print(f"warning: labels of {size} px cannot be pretrained on: doll pretrain's {DECODERS[DEFAULT_DECODER]} "
              f"needs a multiple of {multiple}; explain with --image-size {' or '.join(map(str, near))} to pretrain "
              "on them", file=sys.stderr)
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

    probs = np.zeros((len(arrays.items), len(classes)), np.float32)  # cheap: one forward per image and member
    with torch.no_grad(), watch("probabilities"):
        for i in range(0, len(probs), s.batch_size):
            x = to_tensor(inputs[i:i + s.batch_size]).to(device)
            probs[i:i + len(x)] = np.mean([torch.sigmoid(m(x).float()).cpu().numpy() for m, _, _ in members], axis=0)
    targets = select_targets(raw, probs, s.targets, s.target_threshold, allowed)
    return Job(s=s, out=out, device=device, members=members, classes=classes, size=size, fmt=fmt, arrays=arrays,
               raw=raw, inputs=inputs, fields=fields, field_model=field_model, probs=probs, targets=targets,
               normal=normal, watch=watch)


def open_parts(job: Job, parts_folder: Path) -> tuple[PartsWriter, dict]:
    """The resumable blocks of this run (a --resume continues only the same run on the same
    images) and the settings the label file records."""
    s = job.s
    run_settings = {k: v for k, v in asdict(s).items() if k not in RUN_ONLY_SETTINGS}
    run_settings["members"] = [info for _, _, info in job.members]
    run_settings["field_model"] = job.field_model  # the lung model whose field shaped the saliency, if any
    # --batch-size only bounds memory (the advice after running out of GPU memory is to halve it and resume)
    resume_key = {**{k: v for k, v in run_settings.items() if k != "batch_size"},
                  "data": data_fingerprint(job.arrays.items, job.raw)}
    if s.overwrite and not s.resume and dist.is_main():
        shutil.rmtree(parts_folder, ignore_errors=True)
    dist.barrier()  # no rank writes a block before rank 0 has cleared the old ones
    parts = PartsWriter(str(parts_folder), resume_key, resume=s.resume, owner=dist.is_main())
    parts.expect(n=job.n, block=s.block, classes=len(job.classes), size=job.size, members=len(job.members))
    dist.barrier()
    return parts, run_settings


def block_range(job: Job, b: int) -> tuple[int, int]:
    return b * job.s.block, min(job.n, (b + 1) * job.s.block)


def explain_blocks(job: Job, explainer, parts: PartsWriter) -> int:
    """Explain this process's unfinished blocks with every member and distil each on the
    device that explained it; a writer thread compresses and writes block k while block k+1
    is explained (the GPU is not kept waiting for the CPU work; at most one finished block
    waits in memory). The bar moves per batch of images. Returns the chunks redone in
    float32 (float16 overflows)."""
    s, watch = job.s, job.watch
    world, rank = (dist.world_size(), dist.rank()) if dist.active() else (1, 0)
    blocks = list(range((job.n + s.block - 1) // s.block))
    todo = [b for b in blocks[rank::world] if not parts.has(b)]  # blocks are dealt round-robin to the processes
    bar = tqdm(total=sum(hi - lo for lo, hi in map(lambda b: block_range(job, b), todo)),
               desc=f"explaining ({s.method})", unit="img", disable=not (s.progress and dist.is_main()),
               bar_format="{l_bar}{bar}| {n:.0f}/{total} [{elapsed}<{remaining}, {rate_fmt}]")
    fallbacks = 0
    pending = None  # the writer's future for the previous block

    with ThreadPoolExecutor(1, thread_name_prefix="doll-writer") as writer:
        for b in todo:
            lo, hi = block_range(job, b)
            per_member, completeness, redone = explain_block(job, explainer, b, bar)
            fallbacks += redone
            with watch("distill"):
                maps, tmask = distill_block(job, b, per_member)
            if pending is not None:
                with watch("wait_for_writer"):
                    pending.result()  # re-raises the writer's errors here
            pending = writer.submit(write_block, job, parts, b, maps, tmask, completeness)
        if pending is not None:
            with watch("wait_for_writer"):
                pending.result()
    bar.close()
    dist.barrier()
    return fallbacks


def explain_block(job: Job, explainer, b: int, bar) -> tuple[list, list[list[float]], int]:
    """Every member's maps of block ``b``, their IG completeness errors (per member, its
    targets') and the chunks redone in float32."""
    s = job.s
    lo, hi = block_range(job, b)
    x = to_tensor(job.inputs[lo:hi]).to(job.device)
    tg = job.targets[lo:hi]
    once = [t[:1] for t in tg] if s.evidence == "abnormal" else tg  # abnormal: one map serves every class
    explained = max(1, sum(1 for t in once if t))  # images the explainer works on (those with targets)
    per_member, completeness, redone = [], [], 0
    for k, (model, _, _) in enumerate(job.members):
        explainer.reseed(b, k)
        share = (hi - lo) / explained / len(job.members)  # bar images per image explained by this member
        moved = [0.0]

        def advance(count: float, share=share, moved=moved) -> None:
            moved[0] += count * share
            bar.update(count * share)

        explainer.progress = advance
        with job.watch("attribute"):
            maps = explainer.attribute(EvidenceOutput(model, s.evidence, job.normal), x, once)
        bar.update((hi - lo) / len(job.members) - moved[0])  # the rest (all of it, for an explainer that never reports)
        diagnostics = diagnostics_of(maps)
        per_member.append([np.repeat(m, len(t), 0) for m, t in zip(maps, tg)] if once is not tg else list(maps))
        completeness.append(list(diagnostics.get("completeness_rel_error", [])))
        redone += int(diagnostics.get("fp32_fallbacks", 0))
    return per_member, completeness, redone


def distill_block(job: Job, b: int, per_member: list) -> tuple[np.ndarray, np.ndarray]:
    """Block ``b``'s saliency, distilled on the device that explained it: uint8 (explained
    targets, H, W) in the row-major order of the targets mask (rows, classes), and the mask.
    Images go to the device in groups of about ``MAPS_PER_STEP`` maps, so the copies made for
    it stay small whatever the block holds. No map with NaN becomes a label."""
    lo, hi = block_range(job, b)
    tg = job.targets[lo:hi]
    tmask = np.zeros((len(tg), len(job.classes)), bool)
    for j, t in enumerate(tg):
        tmask[j, t] = True
    if not tmask.any():
        return np.zeros((0, job.size, job.size), np.uint8), tmask
    explained = [j for j, t in enumerate(tg) if t]
    groups, group, size = [], [], 0
    for j in explained:
        group, size = group + [j], size + len(tg[j])
        if size >= MAPS_PER_STEP or j == explained[-1]:
            groups.append(group)
            group, size = [], 0
    out = []
    for group in groups:
        member_maps = [np.concatenate([maps[j][np.argsort(tg[j])] for j in group]) for maps in per_member]
        fields = None if job.fields is None else \
            np.repeat(job.fields[lo:hi][group], [len(tg[j]) for j in group], axis=0)
        names = [f"image {lo + j} ({job.arrays.items[lo + j].id})" for j in group for _ in tg[j]]
        out.append(distill_maps(member_maps, job.s.sign, job.s.smooth, fields, job.device, names, job.member_names))
    return np.concatenate(out), tmask


def write_block(job: Job, parts: PartsWriter, b: int, maps: np.ndarray, tmask: np.ndarray,
                completeness: list[list[float]]) -> None:
    """Compress a block's rows as the label file stores them and write the block (in the
    writer thread)."""
    with job.watch("write_blocks"):
        parts.write(b, rows=saliency_row_chunks(maps, tmask), targets=tmask,
                    completeness=np.array(completeness, np.float32))  # (members, targets)


def assemble(job: Job, parts: PartsWriter, run_settings: dict, t0: float, fallbacks: int) -> dict:
    """Join the blocks into the label file (rank 0), with its metrics and config; returns the metrics."""
    s, n, classes = job.s, job.n, job.classes
    targets_per_class = np.array([[c in t for c in range(len(classes))] for t in job.targets]).sum(0).tolist() if n else []
    metrics = {"command": "explain", "images": n, "targets": int(sum(map(len, job.targets))),
               "targets_per_class": dict(zip(classes, targets_per_class)),
               "method": s.method, "steps": s.steps, "members": len(job.members), "label_rule": s.label_rule}
    if not dist.is_main():
        return metrics
    world = dist.world_size() if dist.active() else 1
    blocks = list(range((n + s.block - 1) // s.block))
    tmask = np.zeros((n, len(classes)), bool)
    comp = []
    for b in blocks:
        if not parts.has(b):
            raise DollError(f"block {b} of the run (explained by rank {b % world}) is missing from {parts.folder}; "
                            + ("under torchrun on several machines --out must be on a file system they all share"
                               if world > 1 else "run again with --resume"))
        z = parts.read(b, ("targets", "completeness"))  # the saliency is read (and checked) once, when assembling
        tmask[b * s.block:b * s.block + len(z["targets"])] = z["targets"]
        comp.append(z["completeness"].reshape(len(job.members), -1))  # (members, targets of the block)

    def saliency_pieces():  # one block in memory at a time
        for b in blocks:
            yield from parts.saliency_pieces(b)

    comp = np.concatenate(comp, axis=1) if comp else np.zeros((len(job.members), 0))
    if s.method.startswith("ig") and comp.size:
        metrics["completeness_rel_error"] = completeness_summary(comp)
        if len(job.members) > 1:  # one member's path can be much harder to integrate than the others'
            metrics["completeness_rel_error_by_member"] = {
                name: completeness_summary(c) for name, c in zip(job.member_names, comp)}
        warning = completeness_warning(metrics["completeness_rel_error"], s.steps)
        if warning:
            metrics["warnings"] = [warning]
    attrs = {"classes": classes, "method": s.method, "settings": run_settings, "label_rule": s.label_rule,
             "classifiers": run_settings["members"], "image_size": job.size, "dataset": s.dataset,
             "root": str(job.fmt.root), "split": s.split}
    with job.watch("assemble"):
        write_label_file(job.out, {"saliency": Blocks((n, len(classes), job.size, job.size), saliency_pieces()),
                                   "targets": tmask, "labels": job.raw, "probs": job.probs,
                                   "images": np.asarray(job.arrays.images), "paths": [it.id for it in job.arrays.items],
                                   "done": np.ones(n, bool)}, attrs)
    shutil.rmtree(parts.folder, ignore_errors=True)
    for warning in metrics.get("warnings", []):  # once the file is there (a damaged block is the only line)
        print(f"warning: {warning}", file=sys.stderr)
    metrics["seconds"] = round(time.time() - t0, 2)
    metrics["seconds_per_image"] = round(metrics["seconds"] / max(n, 1), 4)
    metrics["seconds_by_phase"] = job.watch.seconds()  # this process's; attribute includes the GPU's time
    if job.device.type == "cuda":
        metrics["fp32_fallback_chunks"] = fallbacks
        metrics["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(job.device) / 2**20, 1)
    write_json(str(job.out) + ".config.json", {"command": "explain", **asdict(s)})
    write_json(str(job.out) + ".metrics.json", metrics)
    return metrics


@releases_outputs
def explain(settings: ExplainSettings | None = None, **kwargs) -> dict:
    """Write the DoLL label file ``out``; returns (and writes to ``<out>.metrics.json``) run
    metrics. In parts: check the settings, prepare the output, prepare the job (ensemble,
    images, fields, targets), open the resumable blocks, explain them, assemble the file."""
    s = settings or ExplainSettings(**kwargs)
    out = check_settings(s)
    parts_folder = prepare_output(s, out)
    t0 = time.time()
    watch = Stopwatch()  # where the time goes: metrics["seconds_by_phase"]
    device = dist.init(resolve_device(s.device))
    if device.type == "cuda":  # peak_cuda_mb is this command's, not earlier work's in the same process
        torch.cuda.reset_peak_memory_stats(device)
    s.batch_size = s.batch_size or default_batch_size(device)
    explainer = make_explainer(s.method, steps=s.steps, baseline=s.baseline, batch_size=s.batch_size,
                               precision=s.precision, seed=s.seed)
    job = prepare_job(s, out, device, watch)
    parts, run_settings = open_parts(job, parts_folder)
    fallbacks = explain_blocks(job, explainer, parts)
    metrics = assemble(job, parts, run_settings, t0, fallbacks)
    dist.barrier()
    return metrics
