"""``doll labels info | merge | refine | export``."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from doll.errors import DollError
from doll.labels.rule import apply_rule, check_rule
from doll.labels.store import Blocks, LabelFile, is_label_file, stored_rows, write_label_file
from doll.outputs import releases_outputs
from doll.utils import (
    atomic_path,
    differing_keys,
    inside,
    prepare_out_dir,
    prepare_out_file,
    unique_names,
    write_json,
    write_png_file,
)


def info(labels: str, verify: bool = False) -> dict:
    """What :meth:`LabelFile.info` says; with ``verify``, also ``verify``: the rows read and
    the ``unreadable`` ones (:meth:`LabelFile.verify`)."""
    with LabelFile(labels) as lf:
        result = lf.info()
        if verify:
            result["verify"] = {"rows": len(lf), "unreadable": lf.verify()}
        return result


# settings that say where and how fast a run went, not what its maps are
PROVENANCE_SETTINGS = ("root", "split", "classifiers", "batch_size", "block")


def output_settings(settings: dict) -> dict:
    """The settings that decide a row's maps: ``settings`` without ``PROVENANCE_SETTINGS``, and
    the members by architecture and weights' sha256 (not by the folder they were read from)."""
    out = {k: v for k, v in (settings or {}).items() if k not in PROVENANCE_SETTINGS}
    if "members" in out:
        out["members"] = [{"arch": m.get("arch"), "sha256": m.get("sha256")} for m in out["members"]]
    return out


@releases_outputs
def merge(inputs: list[str], out: str, overwrite: bool = False) -> dict:
    """Join label files row-wise: e.g. the splits of a data set explained on separate machines.
    They must agree on what decides the maps (classes, method, ``output_settings``, label
    rule, image size, data set); where they came from (root, split, batch size) may differ.
    A merged file of several splits records split "" (all), so evaluation looks in every split."""
    t0 = time.time()
    if not inputs:
        raise DollError("name the label files to merge")
    prepare_out_file(out, overwrite=overwrite, is_ours=is_label_file, what="label file",
                     inputs={f"input {p}": p for p in inputs})
    small: dict[str, list] = {}
    keeps: list[np.ndarray] = []
    attrs = None
    seen: set[str] = set()
    first = None
    splits = []
    for p in inputs:
        with LabelFile(p) as lf:
            mine = {k: lf.attr(k) for k in ("classes", "method", "label_rule", "image_size", "dataset")}
            mine["settings"] = output_settings(lf.attr("settings"))
            splits.append(lf.attr("split"))
            if first is None:
                first = mine
                attrs = {k: lf.attr(k) for k in ("classes", "method", "settings", "label_rule", "image_size", "dataset",
                                                 "classifiers", "root")}
                shapes = {k: lf[k].shape[1:] for k in ("saliency", "images")}
            elif any(first[k] != mine[k] for k in mine):
                bad = [k for k in mine if first[k] != mine[k]]
                if "settings" in bad:
                    bad[bad.index("settings")] = f"settings ({', '.join(differing_keys(first['settings'], mine['settings']))})"
                raise DollError(f"{p} differs from {inputs[0]} in {', '.join(bad)}; only label files explained the "
                                "same way can be merged")
            keep = lf.done.copy()
            paths = lf.paths()
            for i, q in enumerate(paths):
                if q in seen:
                    keep[i] = False
                seen.add(q)
            keeps.append(keep)
            for k in ("targets", "labels", "probs", "done"):
                small.setdefault(k, []).append(lf[k][:][keep])
            small.setdefault("paths", []).append(np.array(paths, dtype=object)[keep])
    attrs["split"] = splits[0] if len(set(splits)) == 1 else ""
    merged: dict = {k: np.concatenate(v) for k, v in small.items()}
    merged["paths"] = merged["paths"].tolist()
    n = len(merged["done"])

    def pieces(key: str):  # kept rows, as stored, one input file open at a time
        row = 0
        for p, keep in zip(inputs, keeps):
            with LabelFile(p) as lf:
                for piece in stored_rows(lf[key], np.flatnonzero(keep)):
                    yield row, piece
                    row += 1

    for key in ("saliency", "images"):
        merged[key] = Blocks((n, *shapes[key]), pieces(key))
    write_label_file(out, merged, attrs)
    return _finished({"command": "labels merge", "inputs": inputs, "out": out, "rows": n}, t0)


def _finished(result: dict, t0: float) -> dict:
    """Add the wall time and write ``<out>.metrics.json`` next to the label file written."""
    result["seconds"] = round(time.time() - t0, 2)
    write_json(str(result["out"]) + ".metrics.json", result)
    return result


@releases_outputs
def export(labels: str, out: str, fmt: str = "png", label_rule: str = "", progress: bool = True,
           overwrite: bool = False) -> dict:
    """One PNG mask (0/255) per explained class per image, ``masks/<class>/<row>.png``, plus
    ``labels.csv`` (row, path, image labels, probabilities) and ``images/<row>.png``."""
    if fmt != "png":
        raise DollError(f"unknown --format {fmt!r}; only png is supported")
    out_dir = Path(out)
    if not str(out).strip():
        raise DollError("--out is empty; name the folder to export into")
    if out_dir.exists() and not out_dir.is_dir():
        raise DollError(f"--out {out_dir} is a file; name a folder to export into")
    with LabelFile(labels) as lf:
        lf.require_readable()  # a damaged row is found before the export is started (or an earlier one deleted)
        prepare_out_dir(out_dir, overwrite=overwrite, command="labels export", inputs={"--labels": labels},
                        holds="an export")
        count = 0
        classes, rule, paths = lf.classes, check_rule(label_rule or lf.label_rule), lf.paths()
        folders = unique_names(classes, "class")  # class names come from a file: data, never paths
        targets, image_labels, probs = lf["targets"][:], lf["labels"][:], lf["probs"][:]
        for i in tqdm(range(len(lf)), desc="exporting", disable=not progress, leave=False):
            if not lf.done[i]:
                continue
            name = f"{i:07d}.png"
            write_png_file(out_dir / "images" / name, lf["images"][i])
            sal = lf["saliency"][i]
            for c in np.flatnonzero(targets[i]):
                path = inside(out_dir, out_dir / "masks" / folders[c] / name)
                write_png_file(path, apply_rule(sal[c], rule).astype(np.uint8) * 255)
                count += 1
        with atomic_path(out_dir / "labels.csv") as tmp, open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["row", "path", *classes, *[f"prob {c}" for c in classes]])
            for i in np.flatnonzero(lf.done):
                w.writerow([f"{i:07d}", paths[i], *["" if np.isnan(v) else v for v in image_labels[i]],
                            *[f"{p:.4f}" for p in probs[i]]])
    result = {"command": "labels export", "out": str(out_dir), "masks": count, "label_rule": rule,
              "folders": {c: f for c, f in zip(classes, folders) if c != f}}
    write_json(out_dir / "export.json", result)
    return result


@releases_outputs
def refine(labels: str, model: str, out: str, batch_size: int = 32, device: str = "auto",
           lung_model: str = "", field_margin: float | None = None,
           overwrite: bool = False, progress: bool = True) -> dict:
    """One self-training round: a new label file whose saliency is the sigmoid output of a
    segmenter pretrained on ``labels`` (`doll pretrain`), times a lung field, for the classes
    each row explains; classes the segmenter was not trained on and everything else are
    copied. The field is the file's own (if any) unless ``lung_model`` and/or
    ``field_margin`` replace it (a better lung model needs no new explanations)."""
    import torch

    from doll.models.checkpoint import read_config
    from doll.models.lung_field import (
        check_field_margin,
        load_lung_model,
        lung_model_config,
        predict_lung_fields,
    )
    from doll.models.segmenter import drop_aux_head, load_segmenter
    from doll.utils import check_positive, resolve_device, to_tensor

    t0 = time.time()
    check_positive(batch_size=batch_size)
    if field_margin is not None:
        check_field_margin(field_margin)
    if lung_model:
        lung_model_config(lung_model)
    if Path(out).exists() and not overwrite:
        raise DollError(f"{out} already exists; pass --overwrite to replace it")
    if not Path(model).is_dir():
        what = "is a file, not a folder" if Path(model).exists() else "does not exist"
        raise DollError(f"--model {model} {what}; pass the --out folder of `doll pretrain`")
    cfg = read_config(model, kind="segmenter")["doll"]  # refuses an unfinished pretrain run
    dev = resolve_device(device)
    with LabelFile(labels) as lf:
        prepare_out_file(out, overwrite=overwrite, is_ours=is_label_file, what="label file",
                         inputs={"--labels": labels, "--model": model, "--lung-model": lung_model or None})
        classes, targets = lf.classes, lf["targets"][:]
        own = cfg.get("classes") or []
        if cfg.get("stage") != "pretrain" or not own or not set(own) <= set(classes):
            raise DollError(f"--model {model} was not pretrained on labels with the classes of {labels} "
                            f"({', '.join(classes)}); pass a `doll pretrain` folder made from this kind of file")
        index = [classes.index(c) for c in own]  # the file's channel of each model output
        net, _ = load_segmenter(model)
        net = drop_aux_head(net).to(dev).eval()  # pretrained with --aux: segment only
        field_model, own_margin = lf.saliency_field()
        field_model = str(lung_model) if lung_model else field_model
        if field_margin is None:
            field_margin = own_margin
        elif not field_model:
            raise DollError(f"{labels} has no lung field; --field-margin needs --lung-model")
        if field_model and not Path(field_model).is_dir():
            raise DollError(f"{labels} was made with the lung model {field_model}, which does not exist (files made "
                            "before doll recorded it absolute keep the path as typed); pass it with --lung-model")
        field_model = str(Path(field_model).resolve()) if field_model else ""  # found from any folder later
        lung = load_lung_model(field_model, dev) if field_model else None
        n, size = len(lf), int(lf.attr("image_size"))
        small = {k: lf[k][:] for k in ("targets", "labels", "probs", "done")}
        small["paths"] = lf.paths()
        attrs = {k: lf.attr(k) for k in ("classes", "method", "label_rule", "classifiers", "image_size",
                                          "dataset", "root", "split") if lf.attr(k) is not None}
        attrs["settings"] = {**(lf.attr("settings") or {}), "refined_with": str(model)}
        if field_model:  # the field that shaped this saliency (evaluate-labels scores it as a prior)
            attrs["settings"].update(field_model=field_model, field_margin=field_margin)
        bar = tqdm(total=n, desc="refining", disable=not progress, leave=False)

        def saliency_pieces():
            for lo in range(0, n, batch_size):
                images = lf["images"][lo:lo + batch_size]
                with torch.no_grad():
                    logits = net(to_tensor(images).to(dev)).float()
                    if logits.shape[-1] != size:
                        logits = torch.nn.functional.interpolate(logits, size=(size, size), mode="bilinear")
                    maps = torch.sigmoid(logits).cpu().numpy()
                if field_model:
                    maps *= predict_lung_fields(field_model, images, dev, batch_size, field_margin, lung)[:, None]
                piece = lf["saliency"][lo:lo + batch_size]  # classes the model lacks keep their saliency
                keep = (targets[lo:lo + batch_size] & small["done"][lo:lo + batch_size, None])[:, index]
                piece[:, index] = np.round(maps * keep[..., None, None] * 255).astype(np.uint8)
                bar.update(len(images))
                yield lo, piece

        write_label_file(out, {**small, "saliency": Blocks((n, len(classes), size, size), saliency_pieces()),
                               "images": Blocks.copy(lf["images"])}, attrs)
        bar.close()
    return _finished({"command": "labels refine", "labels": labels, "model": str(model), "out": str(out), "rows": n}, t0)
