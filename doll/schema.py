"""One schema for everything doll reads back: checkpoint configs, label files, the blocks of an
unfinished ``doll explain``, ``phantom.json``, training states, weights.

Every reader validates what it reads here, before it indexes anything, and a file that does
not fit is one :class:`~doll.errors.DollError` of the form::

    <file>: <field> is <what was found>; expected <what fits>, <how to fix>

(the CLI prints it as ``error: ...`` and exits 2). The entry points, one per kind of file:

=============================  =======================================================
:func:`read_checkpoint_config`  a classifier's or segmenter's ``config.json``
:func:`check_weights`           tensors of a checkpoint: all finite
:func:`check_label_file`        a DoLL label file's attributes and datasets (an open h5py.File)
:func:`read_parts_settings`     ``<label file>.parts/settings.json`` of an unfinished explain
:func:`check_parts_block`       one ``block_*.npz`` of it
:func:`read_phantom_meta`       ``phantom.json`` of a phantom data set
:func:`check_train_state`       ``last.pt``, the state a run resumes from
:func:`read_run_metrics`        a run's ``metrics.json`` (``--resume``, a study's cells, whether a
                                folder given to the next stage finished)
:func:`read_run_config`         a run's ``config.json`` (``--resume``, a study's cells);
                                in :mod:`doll.utils`: ``prepare_out_dir`` reads it there
:func:`read_ensemble_config`    ``config.json`` of a ``--classifiers`` folder (its ``members``)
:func:`read_label_evaluation`   the demo's ``label_quality.json`` (evaluate-labels' result)
=============================  =======================================================

Fields doll does not read are left alone (a config carries every setting of its run), but
any field a reader uses is checked here: its type, its range (image sizes in
[``IMAGE_SIZE_MIN``, ``IMAGE_SIZE_MAX``]) and its agreement with the rest of the file (a
label file's datasets have one row count, its class count and its image size). Names that a
reader may turn into paths (class names, the phantom's CheXpert folder) cannot leave the
folder they are joined to.

This module may import only :mod:`doll.errors` and :mod:`doll.utils` (pyproject.toml's
import-linter layers); the constants of the file formats stay with their writers, which pass
what they expect. The primitives (:func:`~doll.utils.read_json_file`, :func:`~doll.utils.fail`,
:func:`~doll.utils.show`) and :func:`~doll.utils.read_run_config` live in :mod:`doll.utils`,
one layer down, because ``prepare_out_dir`` there reads a run's ``config.json`` with them.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path, PureWindowsPath
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from doll.errors import DollError
from doll.utils import MISSING, fail, read_json_file, read_run_config, show
from doll.utils import Found as _Found

IMAGE_SIZE_MIN, IMAGE_SIZE_MAX = 16, 4096  # a model's image size, pixels
LABEL_SIZE_MAX = 4096  # a label file's image side (small sizes are fine there: tests use 8 px)

FIX_CONFIG = "copy the folder again or rerun the command that wrote it"
FIX_LABELS = "the file is damaged or was edited: copy it again or rerun doll explain"
FIX_STATE = "start the run again with --overwrite (or put back a copy of the file)"
FIX_PHANTOM = "make the data set again with doll data phantom --out {root} --overwrite"


def mismatch(field: str, found: Any, expected: str) -> PydanticCustomError:
    """A cross-field disagreement, raised from a model validator (reported like a field error)."""
    return PydanticCustomError("doll", "{field}", {"field": field, "found": found, "expected": expected})


def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the content"


def _model_of(annotation) -> type[BaseModel] | None:
    """The model class inside an annotation (``M``, ``M | None``, ``list[M]``, ``Annotated[M, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _expected(model: type[BaseModel], loc: tuple, err: dict) -> str:
    """What the field at ``loc`` should be: its description, else pydantic's own words."""
    desc, cls = None, model
    if not loc:
        desc = model.__doc__.strip().splitlines()[0].rstrip(".") if model.__doc__ else None
    for part in loc:
        if isinstance(part, int) or cls is None:
            continue
        f = cls.model_fields.get(part)
        if f is None:
            break
        desc = f.description or desc
        cls = _model_of(f.annotation)
    if desc:
        return desc
    msg = str(err.get("msg") or "another value")  # pydantic's words: "Input should be a valid integer"
    return msg.removeprefix("Input should be ").removeprefix("Value error, ")


def validate(model: type[BaseModel], data: Any, path, fix: str, prefix: str = "") -> BaseModel:
    """``model.model_validate(data)``; its first error as :func:`fail`'s DollError (the field
    named after ``prefix``, e.g. "attribute ")."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        if err["type"] == "doll":  # a model's own check: ctx names the field under the error's location
            ctx = err["ctx"]
            name = ".".join(p for p in (_field(tuple(err["loc"])) if err["loc"] else "", ctx["field"]) if p)
            if not name.startswith(("attribute ", "dataset ")):  # a check that names the kind of field itself
                name = prefix + name
            raise fail(path, name, ctx["found"], ctx["expected"], fix) from None
        loc = tuple(err["loc"])
        found = MISSING if err["type"] == "missing" else err.get("input")
        raise fail(path, prefix + _field(loc), found, _expected(model, loc, err), fix) from None


class Strict(BaseModel):
    """Strict types (a JSON 32.0 or "32" is not an image size) and extra keys kept."""

    model_config = ConfigDict(strict=True, extra="allow", arbitrary_types_allowed=True)


def _safe_name(name: str) -> str:
    """A name a reader may join to a folder: not empty, no NUL, not absolute, no ``..`` part."""
    parts = re.split(r"[/\\]", name)
    if not name.strip() or "\0" in name or name.startswith(("/", "\\")) or PureWindowsPath(name).drive \
            or any(p in (".", "..") for p in parts):
        raise ValueError("not a safe name")
    return name


def _unique(names: list[str]) -> list[str]:
    seen = set()
    for n in names:
        if n in seen:
            raise mismatch("", names, f"class names without repeats ({n!r} twice)")
        seen.add(n)
    return names


IMAGE_SIZE_TEXT = f"an integer pixel size in [{IMAGE_SIZE_MIN}, {IMAGE_SIZE_MAX}]"
ImageSize = Annotated[int, Field(ge=IMAGE_SIZE_MIN, le=IMAGE_SIZE_MAX, description=IMAGE_SIZE_TEXT)]
Name = Annotated[str, AfterValidator(_safe_name)]
ClassNames = Annotated[list[Name], Field(min_length=1), AfterValidator(_unique)]
Identifier = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.+-]+$")]
Finite = Annotated[float, Field(allow_inf_nan=False)]


# -- checkpoint configs (config.json) ---------------------------------------------------------------

class Normalisation(Strict):
    """How pixels become inputs: ``(x * scale - mean) / std``."""

    scale: Finite = Field(description="a finite number")
    mean: Finite = Field(description="a finite number")
    std: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(description="a positive number")


CLASSES_TEXT = "a list of class names (text; no empty, '.', '..' or absolute names)"


class DollSection(Strict):
    """an object with the doll section (kind, classes, image size, ...)"""

    kind: str = Field(min_length=1, description="the kind of checkpoint (text)")
    classes: ClassNames | None = Field(None, description=CLASSES_TEXT)
    image_size: ImageSize | None = Field(None, description=IMAGE_SIZE_TEXT)
    in_channels: Literal[1] | None = Field(None, description="1 (doll's networks read one channel)")
    normalisation: Normalisation | None = Field(None, description="an object with scale, mean and std")


class SourceNormalisation(Strict):
    """How pixels become an imported network's input: ``(x * scale - mean[c]) / std[c]`` per channel."""

    scale: Finite = Field(description="a finite number")
    mean: Annotated[list[Finite], Field(min_length=1, max_length=3)] = Field(description="a list of 1 to 3 numbers")
    std: Annotated[list[Annotated[float, Field(gt=0, allow_inf_nan=False)]], Field(min_length=1, max_length=3)] = \
        Field(description="a list of 1 to 3 positive numbers")


class ImportSource(Strict):
    """an object saying where an imported classifier came from (doll classifiers import)"""

    library: Literal["torchvision", "timm", "txv"] = Field(description="one of 'torchvision', 'timm', 'txv'")
    in_channels: Literal[1, 3] = Field(description="1 or 3 (the imported network's input channels)")
    outputs: ClassNames = Field(description="the names of the network's outputs (a list of text, no repeats)")
    class_map: dict[str, str | None] = Field(description="an object: doll class -> the output it is, or null")
    logit_shift: dict[str, Finite] = Field(default_factory=dict, description="an object: doll class -> a number")
    normalisation: SourceNormalisation = Field(description="an object with scale, mean and std (lists)")

    @model_validator(mode="after")
    def _agree(self):
        for name in ("mean", "std"):
            if len(getattr(self.normalisation, name)) != self.in_channels:
                raise mismatch(f"normalisation.{name}", getattr(self.normalisation, name),
                               f"{self.in_channels} number(s), one per input channel")
        for cls, output in self.class_map.items():
            if output is not None and output not in self.outputs:
                raise mismatch(f"class_map.{cls}", output, "one of the outputs, or null")
        return self


class ClassifierSection(DollSection):
    """an object with the doll section of a classifier (kind, arch, classes, image_size)"""

    source: ImportSource | None = Field(None, description="an object saying where an imported classifier came from")

    kind: Literal["classifier"] = Field(description="'classifier' (this command needs a classifier folder, from "
                                                    "doll train-classifiers)")
    arch: Identifier = Field(description="the name of a classifier architecture (e.g. 'resnet18')")
    classes: ClassNames = Field(description=CLASSES_TEXT)
    image_size: ImageSize
    lung_model: str = Field("", description="the folder of a lung model (text)")


class SegmenterSection(DollSection):
    """an object with the doll section of a segmenter (kind, encoder, classes, image_size)"""

    kind: Literal["segmenter"] = Field(description="'segmenter' (this command needs a segmenter: a doll pretrain "
                                                   "folder, or the model/ folder of a doll finetune run)")
    stage: str | None = Field(None, description="the stage that made it (text)")
    task: str | None = Field(None, description="the fine-tuning task (text)")
    decoder: Identifier | None = Field(None, description="the name of a decoder (e.g. 'pspnet')")
    encoder: Identifier = Field(description="the name of an encoder (e.g. 'resnet34')")
    classes: ClassNames = Field(description=CLASSES_TEXT)
    image_size: ImageSize
    mode: Literal["full", "adapter", "head"] = Field("full", description="one of 'full', 'adapter', 'head'")
    aux: bool = Field(False, description="true or false")


class CheckpointConfig(Strict):
    """a JSON object with a "doll" section"""

    doll: DollSection = Field(description="an object with the doll section (kind, classes, image size, ...)")


class ClassifierConfig(CheckpointConfig):
    """a JSON object with a "doll" section"""

    doll: ClassifierSection = Field(description="an object with the doll section (kind, arch, classes, image_size)")


class SegmenterConfig(CheckpointConfig):
    """a JSON object with a "doll" section and segmentation-models-pytorch's keys"""

    doll: SegmenterSection = Field(description="an object with the doll section (kind, encoder, classes, image_size)")
    # segmentation_models_pytorch.from_pretrained reads these (doll reads _model_class for old folders)
    model_class: Identifier | None = Field(None, alias="_model_class", description="an smp model class name (text)")
    encoder_name: Identifier | None = Field(None, description="the name of an encoder (text)")
    in_channels: Literal[1] | None = Field(None, description="1 (doll's networks read one channel)")
    classes: Annotated[int, Field(ge=1)] | None = Field(None, description="the number of output channels, a "
                                                                          "positive integer")
    aux_params: dict[str, Any] | None = Field(None, description="an object or null")

    @model_validator(mode="after")
    def _agree(self):
        doll = self.doll
        if self.classes is not None and self.classes != len(doll.classes):
            raise mismatch("classes", self.classes, f"{len(doll.classes)}, the number of doll.classes")
        if self.encoder_name is not None and self.encoder_name != doll.encoder:
            raise mismatch("encoder_name", self.encoder_name, f"{doll.encoder!r}, the same as doll.encoder")
        return self


CONFIGS = {"classifier": ClassifierConfig, "segmenter": SegmenterConfig}


def read_checkpoint_config(path, kind: str | None = None) -> dict:
    """A checkpoint's ``config.json``, checked for ``kind`` ("classifier", "segmenter", or None:
    any doll checkpoint). Returns the file's own dict (every field a reader uses is valid)."""
    if not Path(path).is_file():
        raise DollError(f"{path} is missing or not a doll checkpoint config; {FIX_CONFIG}")
    config = read_json_file(path, FIX_CONFIG)
    validate(CONFIGS.get(kind, CheckpointConfig), config, path, FIX_CONFIG)
    return config


def check_weights(path, state: dict) -> dict:
    """Refuse weights with NaN or infinite values: one error naming the first such tensor."""
    import torch

    for name, t in state.items():
        if torch.is_tensor(t) and t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            nan = int(torch.isnan(t).sum())
            inf = int(torch.isinf(t).sum())
            what = ", ".join(f"{k} {w}" for k, w in ((nan, "NaN"), (inf, "infinite")) if k)
            raise DollError(f"{path}: tensor {name} is not finite ({what} of {t.numel()} values); expected finite "
                            "weights, the training diverged or the file is damaged: retrain, or copy it again")
    return state


# -- the label file -------------------------------------------------------------------------------

JSON_ATTRS = ("classes", "settings", "classifiers")


class LabelSettings(Strict):
    """an object with the explanation's settings"""

    # a key may be absent (files made before it), never null
    field_model: str = Field(None, description="the lung model's folder (text)")
    lung_model: str = Field(None, description="the lung model's folder (text)")
    field_margin: Annotated[float, Field(ge=0, lt=0.5)] = Field(None, description="a number in [0, 0.5)")
    smooth: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(None, description="a non-negative number")
    members: list[dict[str, Any]] = Field(None, description="a list of objects (the classifiers)")


class LabelAttrs(Strict):
    """attributes of a DoLL label file"""

    format_version: int = Field(description="an integer")
    finished: Annotated[int, Field(ge=0, le=1)] | None = Field(None, description="1 (or 0 while unfinished)")
    classes: ClassNames = Field(description=f"{CLASSES_TEXT}, as JSON")
    method: str | None = Field(None, description="text")
    settings: LabelSettings | None = Field(None, description="a JSON object")
    label_rule: str | None = Field(None, description="text (a label rule, e.g. 'otsu')")
    classifiers: list[dict[str, Any]] | None = Field(None, description="a JSON list of objects")
    image_size: Annotated[int, Field(ge=1, le=LABEL_SIZE_MAX)] | None = Field(
        None, description=f"an integer in [1, {LABEL_SIZE_MAX}]")
    dataset: str | None = Field(None, description="text")
    root: str | None = Field(None, description="text")
    split: str | None = Field(None, description="text")
    tool_version: str | None = Field(None, description="text")


def _attr_value(key: str, value: Any, path):
    """An HDF5 attribute as Python: numpy scalars as numbers, bytes as text, the JSON attributes decoded."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise fail(path, f"attribute {key}", value, "UTF-8 text", FIX_LABELS) from None
    if key in JSON_ATTRS and isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise fail(path, f"attribute {key}", _Found(f"not JSON ({show(value)})"), "JSON", FIX_LABELS) from None
    return value


class DatasetInfo(Strict):
    """a dataset"""

    shape: tuple[int, ...]
    dtype: str
    text: bool = False  # a string dtype


def _describe(obj) -> Any:
    import h5py

    if not isinstance(obj, h5py.Dataset):
        return _Found(f"a {type(obj).__name__.lower()}, not a dataset")
    return {"shape": tuple(obj.shape), "dtype": str(obj.dtype), "text": h5py.check_string_dtype(obj.dtype) is not None}


def _majority(values: list):
    """The most common value (the first one's on a tie)."""
    return max(values, key=lambda v: (values.count(v), v == values[0]))


def _ds_found(d: DatasetInfo) -> _Found:
    return _Found(f"{'text' if d.text else d.dtype} of shape {d.shape}")


class LabelDatasets(Strict):
    """the datasets of a DoLL label file (one row count, their class count, one image size)"""

    saliency: DatasetInfo = Field(description="a uint8 dataset (rows, classes, height, width)")
    images: DatasetInfo = Field(description="a uint8 dataset (rows, height, width)")
    targets: DatasetInfo = Field(description="a bool dataset (rows, classes)")
    labels: DatasetInfo = Field(description="a float dataset (rows, classes)")
    probs: DatasetInfo = Field(description="a float dataset (rows, classes)")
    paths: DatasetInfo = Field(description="a text dataset (rows,)")
    done: DatasetInfo = Field(description="a bool dataset (rows,)")
    # given by the reader: the class count (from the classes attribute) and the image size (attribute, if any)
    n_classes: int
    image_size: int | None = None

    @model_validator(mode="after")
    def _agree(self):
        sets = {k: getattr(self, k) for k in ("saliency", "images", "targets", "labels", "probs", "paths", "done")}
        ndim = {"saliency": 4, "images": 3, "targets": 2, "labels": 2, "probs": 2, "paths": 1, "done": 1}
        kinds = {"saliency": ("uint8",), "images": ("uint8",), "targets": ("bool",), "labels": ("float16", "float32",
                 "float64"), "probs": ("float16", "float32", "float64"), "done": ("bool",)}
        for k, d in sets.items():
            desc = type(self).model_fields[k].description
            if len(d.shape) != ndim[k] or (d.text if k != "paths" else not d.text) or \
                    (k in kinds and d.dtype not in kinds[k]):
                raise mismatch(f"dataset {k}", _ds_found(d), desc)
        rows = [d.shape[0] for d in sets.values()]
        n = _majority(rows)  # the odd one out is the damaged one
        per_class = [sets[k].shape[1] for k in ("saliency", "targets", "labels", "probs")]
        c = self.n_classes
        if per_class.count(c) < 2 and per_class.count(_majority(per_class)) >= 3:  # the datasets agree, not the names
            raise mismatch("attribute classes", _Found(f"a list of {c} names"),
                           f"{_majority(per_class)} names, one per class of the datasets")
        sizes = [self.saliency.shape[2:], self.images.shape[1:]]
        hw = _majority(sizes + ([(self.image_size, self.image_size)] if self.image_size else []))
        if self.image_size and sizes[0] == sizes[1] == hw and hw != (self.image_size, self.image_size):
            raise mismatch("attribute image_size", self.image_size, f"{hw[0]}, the size of the saliency and images")
        h, w = hw
        want = {"saliency": (n, c, h, w), "images": (n, h, w), "targets": (n, c), "labels": (n, c), "probs": (n, c),
                "paths": (n,), "done": (n,)}
        for k, shape in want.items():
            if sets[k].shape != shape:
                why = {"saliency": f"(rows {n}, {c} classes, {h}, {w})", "images": f"(rows {n}, {h}, {w})"}.get(
                    k, f"{shape} (rows {n}{f', {c} classes' if len(shape) == 2 else ''})")
                raise mismatch(f"dataset {k}", _ds_found(sets[k]), f"the shape {why}, as the other datasets and the "
                                                                   "attributes say")
        if not (1 <= h <= LABEL_SIZE_MAX and 1 <= w <= LABEL_SIZE_MAX):
            raise mismatch("dataset saliency", _ds_found(self.saliency), f"images of 1 to {LABEL_SIZE_MAX} pixels a side")
        return self


def check_label_file(f, path, fmt: str, version: int) -> dict:
    """Check an open label file (an ``h5py.File``): its ``format`` (``fmt``), its
    ``format_version`` (``version``), the attributes readers use and the datasets' dtypes and
    shapes, which must agree. Returns the attributes, decoded and checked (``image_size``
    filled in from the datasets when the file has none)."""
    found = f.attrs.get("format")
    if isinstance(found, bytes):
        found = found.decode("utf-8", "replace")
    if not isinstance(found, str) or found != fmt:
        raise DollError(f"{path} is not a DoLL label file (format {show(found)}, expected {fmt!r})")
    raw = {}
    for key in f.attrs:
        try:
            raw[key] = f.attrs[key]
        except (OSError, TypeError, ValueError) as exc:  # an attribute h5py cannot decode
            raise fail(path, f"attribute {key}", _Found(f"unreadable ({exc})"), "text or a number", FIX_LABELS) from None
    first = _attr_value("format_version", raw.get("format_version", MISSING), path)
    if first is MISSING:
        raise fail(path, "attribute format_version", MISSING, "an integer", FIX_LABELS)
    if isinstance(first, int) and not isinstance(first, bool) and first != version:
        raise DollError(f"{path} has label format version {first}; this doll reads version {version}")
    values = {k: _attr_value(k, v, path) for k, v in raw.items() if k != "format"}
    model = validate(LabelAttrs, values, path, FIX_LABELS, prefix="attribute ")
    missing = [k for k in LabelDatasets.model_fields if k not in ("n_classes", "image_size") and k not in f]
    if missing:
        raise DollError(f"{path} lacks the dataset(s) {', '.join(missing)}; {FIX_LABELS}")
    described = {k: _describe(f[k]) for k in LabelDatasets.model_fields if k not in ("n_classes", "image_size")}
    validate(LabelDatasets, {**described, "n_classes": len(model.classes), "image_size": model.image_size}, path,
             FIX_LABELS, prefix="dataset ")
    attrs = {k: values.get(k) for k in LabelAttrs.model_fields}
    attrs["format_version"], attrs["classes"] = model.format_version, list(model.classes)
    if attrs["image_size"] is None:
        attrs["image_size"] = int(f["saliency"].shape[-1])
    return attrs


# -- the blocks of an unfinished explain (<label file>.parts/) ---------------------------------------

class PartsData(Strict):
    """the images a run explains"""

    images: Annotated[int, Field(ge=0)] = Field(description="a number of images")
    sha256: str = Field(description="text")


class PartsSettings(Strict):
    """a JSON object: the settings of the unfinished run"""

    block: Annotated[int, Field(ge=1)] | None = Field(None, description="a positive number of images per block")
    data: PartsData | None = Field(None, description="an object (images, sha256)")
    classifiers: str | None = Field(None, description="text")
    dataset: str | None = Field(None, description="text")
    root: str | None = Field(None, description="text")
    split: str | None = Field(None, description="text")


def parts_fix(parts) -> str:
    return f"start the run again with --overwrite (or delete {parts})"


def read_parts_settings(path) -> dict:
    """``settings.json`` of an unfinished explain's parts folder (what ``--resume`` must match)."""
    fix = parts_fix(Path(path).parent)
    settings = read_json_file(path, fix)
    validate(PartsSettings, settings, path, fix)
    return settings


def check_parts_block(path, arrays: dict, rows: int | None = None, classes: int | None = None,
                      size: int | None = None, members: int | None = None) -> dict:
    """One block of an unfinished explain: ``targets`` bool (rows, classes), the saliency as
    ``rows`` uint8 (each row's compressed chunk, end to end) and ``row_ends`` (where each
    ends), or, from doll before 2026-12-06, ``maps`` uint8 (explained targets, size, size),
    ``completeness`` float (members x its values); the counts the run expects are checked
    where given."""
    fix = f"delete {path} and finish the run with the same doll explain command and --resume (the block is " \
          "explained again)"
    t, maps, comp = arrays.get("targets"), arrays.get("maps"), arrays.get("completeness")
    if t is not None:
        if t.dtype != bool or t.ndim != 2 or (rows is not None and len(t) != rows) or \
                (classes is not None and t.shape[1] != classes):
            raise fail(path, "targets", t, f"a bool array ({rows if rows is not None else 'rows'}, "
                                           f"{classes if classes is not None else 'classes'})", fix)
    if maps is not None:
        k = int(t.sum()) if t is not None else None
        if maps.dtype != np.uint8 or maps.ndim != 3 or (k is not None and len(maps) != k) or \
                (size is not None and maps.shape[1:] != (size, size)):
            raise fail(path, "maps", maps, f"a uint8 array ({k if k is not None else 'targets'}, "
                                           f"{size or 'size'}, {size or 'size'}), one map per explained target", fix)
    rows, ends = arrays.get("rows"), arrays.get("row_ends")
    if rows is not None and (rows.dtype != np.uint8 or rows.ndim != 1):
        raise fail(path, "rows", rows, "a uint8 array of one dimension (the rows' compressed chunks end to end)", fix)
    if ends is not None:
        n = len(t) if t is not None else None
        total = len(rows) if rows is not None else None
        if ends.dtype.kind not in "iu" or ends.ndim != 1 or (n is not None and len(ends) != n) or \
                (len(ends) and (ends[0] <= 0 or (np.diff(ends) <= 0).any() or (total is not None and ends[-1] != total))):
            raise fail(path, "row_ends", ends, f"increasing integers, one per row ({n if n is not None else 'rows'}), "
                                               f"the last {total if total is not None else 'the size of rows'}", fix)
    if comp is not None:
        if comp.dtype.kind != "f" or (members and comp.size % members):
            raise fail(path, "completeness", comp, f"a float array with {members or 'a'} row(s) per member", fix)
    return arrays


# -- phantom.json ------------------------------------------------------------------------------------

class PhantomMeta(Strict):
    """a JSON object describing the phantom data set"""

    format: Literal["doll-phantom"] = Field("doll-phantom", description="'doll-phantom'")
    version: Annotated[int, Field(ge=1)] = Field(1, description="a positive integer")
    n: Annotated[int, Field(ge=0)] | None = Field(None, description="a number of images")
    size: ImageSize | None = Field(None, description=IMAGE_SIZE_TEXT)
    seed: int | None = Field(None, description="an integer")
    chexpert_dir: Name = Field("CheXpert-v1.0-phantom", description="the name of a folder inside the data set")
    classes: ClassNames | None = Field(None, description=CLASSES_TEXT)
    structures: ClassNames | None = Field(None, description=CLASSES_TEXT)
    findings: ClassNames | None = Field(None, description=CLASSES_TEXT)
    summary: dict[str, Any] | None = Field(None, description="an object")

    @model_validator(mode="after")
    def _one_folder(self):
        if "/" in self.chexpert_dir or "\\" in self.chexpert_dir:
            raise mismatch("chexpert_dir", self.chexpert_dir, "the name of a folder inside the data set")
        return self


def read_phantom_meta(path, version: int) -> dict:
    """``phantom.json``, checked; a newer ``version`` than this doll's is refused."""
    fix = FIX_PHANTOM.format(root=Path(path).parent)
    meta = read_json_file(path, fix)
    model = validate(PhantomMeta, meta, path, fix)
    if model.version > version:
        raise fail(path, "version", model.version, f"{version} or lower (made by a newer doll): update doll", fix)
    return {**meta, "chexpert_dir": model.chexpert_dir}


# -- a run's metrics.json -----------------------------------------------------------------------------

FIX_METRICS = "delete it and run the same command again with --resume (or start the run again with --overwrite)"
Count = Annotated[int, Field(ge=0)]
Number = Annotated[float, Field(allow_inf_nan=False)]
NUMBER_TEXT = "a finite number or null"


def _rows_alike(rows: list[list]) -> list[list]:
    if any(len(r) != len(rows[0]) for r in rows):
        raise mismatch("", _Found(f"rows of lengths {sorted({len(r) for r in rows})}"),
                       "one IoU per structure in every row (rows of one length)")
    return rows


class CurvePoint(Strict):
    """an object (an evaluation: step, test_iou)"""

    step: Count | None = Field(None, description="a step count or null")
    test_iou: Number | None = Field(None, description=NUMBER_TEXT)
    val_iou: Number | None = Field(None, description=NUMBER_TEXT)


class StructureScores(Strict):
    """an object (a structure's scores: iou, dice)"""

    iou: Number | None = Field(None, description=NUMBER_TEXT)
    dice: Number | None = Field(None, description=NUMBER_TEXT)


class RunScores(Strict):
    """an object (one seed's run: steps, curve, per-image IoUs, ...)"""

    steps: Count | None = Field(None, description="a step count")
    max_steps: Annotated[int, Field(ge=1)] | None = Field(None, description="a positive step count")
    images_seen: Count | None = Field(None, description="a count")
    train_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        None, description="a number of seconds")
    trainable_params: Count | None = Field(None, description="a count")
    train_ids: list[str | int] | None = Field(None, description="a list of image ids")
    curve: list[CurvePoint] | None = Field(None, description="a list of objects (step, test_iou)")
    per_image_iou: Annotated[list[list[Number | None]], AfterValidator(_rows_alike)] | None = Field(
        None, description="a list of rows of numbers (one row per test image, one IoU per structure)")


class RunMetrics(Strict):
    """a JSON object (the run's metrics)"""

    command: str | None = Field(None, description="the command that wrote it (text)")
    finished: bool | None = Field(None, description="true or false")
    # the engine's (a fit of train-classifiers, pretrain, finetune): what --resume of a finished fit returns
    steps: Count | None = Field(None, description="a step count")
    max_steps: Annotated[int, Field(ge=1)] | None = Field(None, description="a positive step count")
    images_seen: Count | None = Field(None, description="a count")
    train_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        None, description="a number of seconds")
    best_step: Annotated[int, Field(ge=-1)] | None = Field(None, description="a step (or -1)")
    best: dict[str, Any] | None = Field(None, description="an object (the best evaluation)")
    history: list[dict[str, Any]] | None = Field(None, description="a list of objects (the evaluations)")
    # finetune's (a study's cell): what doll study reads and aggregates
    runs: list[RunScores] | None = Field(None, description="a list of objects (one per seed)")
    n_train: Count | None = Field(None, description="a count")
    n_train_total: Count | None = Field(None, description="a count")
    n_test: Count | None = Field(None, description="a count")
    test_split: str | None = Field(None, description="text")
    structures: list[str] | None = Field(None, description="a list of structure names (text)")
    headline: dict[str, Any] | None = Field(None, description="an object")
    per_structure: dict[str, StructureScores | None] | None = Field(
        None, description="an object: structure -> its scores (iou, dice)")
    mean_iou: Number | None = Field(None, description=NUMBER_TEXT)
    mean_dice: Number | None = Field(None, description=NUMBER_TEXT)
    positives_mean_iou: Number | None = Field(None, description=NUMBER_TEXT)
    negatives_false_positive_area: Number | None = Field(None, description=NUMBER_TEXT)


def read_run_metrics(path, fix: str = FIX_METRICS) -> dict:
    """A run's ``metrics.json`` as a doll command reads it back: a JSON object whose fields doll
    reads (``finished``, the engine's budget and history, finetune's ``runs`` and the scores a
    study aggregates) have their types; the many others are left alone. Returns the file's dict."""
    metrics = read_json_file(path, fix)
    validate(RunMetrics, metrics, path, fix)
    return metrics


# -- a classifier ensemble's config.json (explain --classifiers: are all its members trained?) ------------

FIX_ENSEMBLE = "put back a copy of the file, or train the ensemble again with doll train-classifiers --overwrite"


class RunCommand(Strict):
    """a JSON object (the run's settings)"""

    command: str | None = Field(None, description="the command that wrote it (text)")


class EnsembleConfig(RunCommand):
    """a JSON object (the settings of a doll train-classifiers run)"""

    members: Annotated[int, Field(ge=1)] = Field(description="the number of classifiers the run trains (an integer "
                                                             ">= 1)")


def read_ensemble_config(path, fix: str = FIX_ENSEMBLE) -> dict:
    """The ``config.json`` at the top of a ``--classifiers`` folder: a JSON object
    (:func:`doll.utils.read_run_config`) whose ``command`` is text where present; a
    ``train-classifiers`` run's has ``members``, an integer >= 1 (how many members must be
    there and finished). Returns the file's dict."""
    config = read_run_config(path, fix)
    validate(RunCommand, config, path, fix)
    if config.get("command") == "train-classifiers":
        validate(EnsembleConfig, config, path, fix)
    return config


# -- evaluate-labels' result as the demo reads it back (label_quality.json: report.html's table) ---------

class ClassQuality(Strict):
    """an object (a class's label quality: iou, topk_iou, pointing, n)"""

    iou: Number = Field(description="a finite number")
    topk_iou: Number = Field(description="a finite number")
    pointing: Number = Field(description="a finite number")
    n: Count = Field(description="a count of images")


class LabelQuality(Strict):
    """a JSON object (evaluate-labels' result)"""

    per_class: dict[str, ClassQuality] = Field(
        description="an object: class -> its scores (iou, topk_iou, pointing: finite numbers; n: a count)")


def read_label_evaluation(path, fix: str) -> dict:
    """evaluate-labels' result read back (the demo's ``label_quality.json``): ``per_class``, an
    object of the classes' scores, each with finite ``iou``, ``topk_iou`` and ``pointing`` and a
    count ``n``. Returns the file's dict."""
    quality = read_json_file(path, fix)
    validate(LabelQuality, quality, path, fix)
    return quality


# -- training state (last.pt) ---------------------------------------------------------------------

def _tensor(value):
    if type(value).__name__ != "Tensor":
        raise ValueError("not a tensor")
    return value


def _byte_tensor(value):
    if type(value).__name__ != "Tensor" or str(value.dtype) != "torch.uint8" or value.ndim != 1:
        raise ValueError("not a uint8 tensor")
    return value


def _rng_torch(value):
    import torch

    if not torch.is_tensor(value):
        raise ValueError("not a tensor")
    try:
        torch.Generator().set_state(value)
    except (RuntimeError, TypeError):
        raise ValueError("not a random-number state") from None
    return value


def _rng_python(value):
    try:
        random.Random().setstate(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("not a random-number state") from None
    return value


Tensor = Annotated[Any, AfterValidator(_tensor)]


class HistoryRow(Strict):
    """an object (a row of the run's history)"""

    epoch: Annotated[float, Field(allow_inf_nan=False)] = Field(description="a number")
    step: Annotated[int, Field(ge=0)] | None = Field(None, description="a step count")


class Progress(Strict):
    """an object with the run's progress"""

    step: Annotated[int, Field(ge=0)] | None = Field(None, description="a step count")
    epoch: Annotated[int, Field(ge=0)] = Field(description="an epoch count")
    batch: Annotated[int, Field(ge=0)] = Field(0, description="a batch count")
    images_seen: Annotated[int, Field(ge=0)] = Field(0, description="a count")
    history: list[HistoryRow] = Field(description="a list of objects")
    best: float | None = Field(None, description="a number or null")
    best_step: Annotated[int, Field(ge=-1)] = Field(-1, description="a step (or -1)")
    best_epoch: float = Field(-1, description="a number")
    bad_evals: Annotated[int, Field(ge=0)] = Field(0, description="a count")
    bad_epochs: Annotated[int, Field(ge=0)] = Field(0, description="a count")
    train_seconds: float = Field(0.0, description="a number")
    eval_seconds: float = Field(0.0, description="a number")
    max_steps: Annotated[int, Field(ge=1)] | None = Field(None, description="a positive step count")

    @model_validator(mode="after")
    def _steps(self):
        if self.step is not None:  # saved by a doll that counts steps: every key of it
            for key in ("max_steps",):
                if getattr(self, key) is None:
                    raise mismatch(f"state.{key}", MISSING, "a positive step count")
            for i, row in enumerate(self.history):
                if row.step is None:
                    raise mismatch(f"state.history[{i}].step", MISSING, "a step count")
        return self


class OptimizerState(Strict):
    """an optimiser's state dict"""

    state: dict[Any, Any] = Field(description="an object")
    param_groups: list[dict[str, Any]] = Field(min_length=1, description="a list of objects")


class TrainState(Strict):
    """a training state (model, optimizer, scheduler, scaler, random-number states, progress)"""

    model: dict[str, Tensor] = Field(min_length=1, description="the network's weights (name -> tensor)")
    optimizer: OptimizerState = Field(description="an optimiser's state dict")
    scheduler: dict[str, Any] = Field(description="a scheduler's state dict")
    scaler: dict[str, Any] = Field(description="a gradient scaler's state dict (may be empty)")
    rng_torch: Annotated[Any, AfterValidator(_rng_torch)] = Field(description="torch's random-number state")
    rng_python: Annotated[Any, AfterValidator(_rng_python)] = Field(description="Python's random-number state")
    rng_cuda: Annotated[Any, AfterValidator(_byte_tensor)] | None = Field(None, description="a uint8 tensor")
    state: Progress = Field(description="an object with the run's progress")


def check_train_state(path, obj: Any) -> dict:
    """A training state as ``torch.load(weights_only=True)`` read it (keys, types, progress)."""
    validate(TrainState, obj, path, FIX_STATE)
    return obj

