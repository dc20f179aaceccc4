"""``doll classifiers import``: a classifier the user already has (torchvision, timm or
torchxrayvision weights) as a member of a doll classifier ensemble folder, which ``doll
explain --classifiers`` (and everything after it) uses like a trained member.

What is written: ``<out>/member_<k>/`` (the next free ``k``; nothing there is replaced)
with ``model.safetensors`` (the network's weights under ``net.``), ``config.json`` (the
``doll`` section every classifier folder has, plus ``source``: the library, the weights
file and its sha256, the network's input convention and outputs, and the class mapping;
:mod:`doll.models.imported` builds the network from it) and ``metrics.json`` saying
``"finished": true``. A new or empty ``--out`` becomes a doll output; an existing one must
be a doll classifier ensemble (of ``train-classifiers`` or earlier imports) whose members
agree with the new one on their classes.

Weights are read as everywhere in doll (``doll.models.checkpoint.read_weights_file``):
safetensors or a plain state dict with ``torch.load(weights_only=True)``; a pickled model
is refused. torchxrayvision's own files of its DenseNets are pickled models: doll refuses
them too and says how to turn one into a state dict (two lines of torchxrayvision); the
user runs that unpickling on purpose, doll never does (docs/import-classifiers.md).
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from doll.data.base import CHEXPERT_CLASSES
from doll.data.dataset import NORMALISATION
from doll.errors import DollError
from doll.models.ensemble import ensemble_plan, sha256_of
from doll.models.checkpoint import read_config, read_weights_file, save_model
from doll.schema import check_weights
from doll.models.imported import (
    SOURCES,
    TXV_ARCHS,
    UNMAPPED_LOGIT,
    ImportedClassifier,
    build_network,
    output_index,
    require_library,
)
from doll.outputs import releases_outputs
from doll.utils import (
    MANIFEST_NAME,
    check_inputs_apart,
    check_setting_values,
    is_doll_output,
    lock_output,
    os_errors,
    prepare_out_dir,
    read_manifest,
    remove_leftover_temporaries,
    tool_version,
    write_json,
)

COMMAND = "classifiers import"
ENSEMBLE_COMMANDS = ("train-classifiers", COMMAND)  # the outputs an import may add a member to

# An imported network's input convention, on the pixel as a fraction of 255: (x / 255 - mean[c]) / std[c].
PRESETS = {
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),  # torchvision's and most of timm's
    "txv": ([0.5], [1 / 2048]),  # torchxrayvision: one channel in [-1024, 1024]
    "doll": ([0.5], [0.25]),  # doll's own: (x / 255 - 0.5) / 0.25
    "unit": ([0.0], [1.0]),  # x / 255, in [0, 1]
}
DEFAULT_NORMALISATION = {"torchvision": "imagenet", "timm": "timm", "txv": "txv"}  # timm: the architecture's own

# torchxrayvision output names for doll class names that are spelt otherwise (the rest match by name,
# ignoring case and "_" against " "): CheXpert's and NIH's names. docs/import-classifiers.md has the table.
TXV_SYNONYMS = {"pleural effusion": "Effusion"}
TXV_NATIVE_SIZE = {"densenet121": 224, "resnet50": 512, "resnet101": 512}


@dataclass
class ImportSettings:
    source: str = ""  # --from: torchvision, timm or txv
    arch: str = ""  # the architecture's name in that library (resnet18, convnext_tiny, densenet121, ...)
    weights: str = ""  # a state dict or safetensors file; with --from txv also a txv weights name (its cache)
    out: str = "artifacts/classifiers"  # the ensemble folder: member_<k>/ is added
    classes: str = ""  # comma-separated; txv: doll class names, mapped (Name=Output maps one by hand)
    classes_file: str = ""  # the classes, one a line
    image_size: int = 0  # 0: the network's own (224; txv's ResNet 512)
    normalisation: str = ""  # imagenet, txv, doll, unit, timm or MEAN/STD ("" : the library's own)
    progress: bool = True  # print notes

    def __post_init__(self):
        for name, flag, what in (("source", "--from", "the library the classifier comes from: torchvision, timm or "
                                                      "txv"),
                                 ("arch", "--arch", "its architecture (e.g. resnet18, densenet121)"),
                                 ("weights", "--weights", "the weights file (a state dict or .safetensors)")):
            if not str(getattr(self, name)).strip():
                raise DollError(f"{flag} is required: {what}")
        if not str(self.out).strip():
            raise DollError("--out is required: the classifier ensemble folder to add the classifier to")
        check_setting_values(self)
        if self.source not in SOURCES:
            raise DollError(f"unknown --from {self.source!r}; choose one of {', '.join(SOURCES)}")
        if self.classes.strip() and str(self.classes_file).strip():
            raise DollError("--classes and --classes-file both name the classes; pass one of them")
        if 0 < self.image_size < 16:
            raise DollError(f"--image-size {self.image_size} is too small; use at least 16 (0: the network's own)")


def _note(message: str, notes: list[str], show: bool) -> None:
    notes.append(message)
    if show:
        print(f"note: {message}", file=sys.stderr)


# -- classes ------------------------------------------------------------------------------------

def parse_classes(s: ImportSettings, existing: list[str] | None) -> tuple[list[str], dict[str, str | None]]:
    """The doll classes of the new member, and the outputs named by hand (``Name=Output``; txv
    only): from --classes, --classes-file, else the ensemble's classes, else CheXpert's 14."""
    if str(s.classes_file).strip():
        path = Path(s.classes_file).expanduser()
        try:
            entries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DollError(f"--classes-file {path} cannot be read ({type(exc).__name__}); name a text file with one "
                            "class a line") from None
    elif s.classes.strip():
        entries = [c.strip() for c in s.classes.split(",")]
    else:
        return list(existing or CHEXPERT_CLASSES), {}
    entries = [e for e in entries if e]
    classes, by_hand = [], {}
    for entry in entries:
        name, eq, output = (part.strip() for part in entry.partition("="))
        if eq:
            if s.source != "txv":
                raise DollError(f"--classes {entry!r}: Name=Output maps a class onto a torchxrayvision output; with "
                                f"--from {s.source} name the network's outputs in their order")
            by_hand[name] = output or None
        classes.append(name)
    if not classes:
        raise DollError("--classes names no class; give the class names, comma-separated")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise DollError(f"--classes names {repeated[0]!r} twice; name each class once")
    if existing is not None and classes != existing:
        raise DollError(f"the classifiers in --out have the classes {', '.join(existing)}, but --classes names "
                        f"{', '.join(classes)}; explain needs one list for the whole ensemble: give theirs (or leave "
                        "out --classes), or import into another --out")
    return classes, by_hand


def _key(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def txv_class_map(classes: list[str], outputs: list[str], trained: list[bool],
                  by_hand: dict[str, str | None]) -> tuple[dict[str, str | None], dict[str, str]]:
    """Each doll class -> the torchxrayvision output it is (None: none), and why a class has none."""
    by_key = {_key(o): o for o in outputs}
    class_map, why = {}, {}
    for c in classes:
        if c in by_hand:
            output = by_hand[c]
            if output is not None and output not in outputs:
                raise DollError(f"--classes {c}={output}: {output!r} is not an output of the torchxrayvision model; its "
                                f"outputs: {', '.join(outputs)}")
        else:
            output = by_key.get(_key(TXV_SYNONYMS.get(_key(c), c)))
        if output is not None and not trained[outputs.index(output)]:
            why[c] = f"the weights never learnt {output}"
            output = None
        elif output is None:
            why[c] = "no torchxrayvision output" if c not in by_hand else "mapped to nothing by hand"
        class_map[c] = output
    if not any(o is not None for o in class_map.values()):
        raise DollError(f"none of the classes ({', '.join(classes)}) is an output of the torchxrayvision model "
                        f"({', '.join(o for o, t in zip(outputs, trained) if t)}); map them by hand with "
                        "--classes Name=Output")
    return class_map, why


# -- normalisation -------------------------------------------------------------------------------

def parse_normalisation(text: str, library: str, in_channels: int, net: nn.Module) -> dict:
    """The network's input convention as ``{"name", "scale", "mean": [...], "std": [...]}``, one
    mean and std per input channel (one value repeated, three averaged for one channel)."""
    name = text.strip() or DEFAULT_NORMALISATION[library]
    if name == "timm":
        cfg = getattr(net, "pretrained_cfg", None) or getattr(net, "default_cfg", None) or {}
        if "mean" not in cfg or "std" not in cfg:
            raise DollError("--normalisation timm: this network records no mean and std; name them (e.g. "
                            "--normalisation imagenet, or MEAN/STD)")
        mean, std = [float(v) for v in cfg["mean"]], [float(v) for v in cfg["std"]]
    elif name in PRESETS:
        mean, std = PRESETS[name]
    else:
        head, slash, tail = name.partition("/")
        try:
            mean, std = [float(v) for v in head.split(",")], [float(v) for v in tail.split(",")]
        except ValueError:
            mean = std = []
        if not slash or not mean or not std or len(mean) not in (1, 3) or len(std) not in (1, 3) or \
                not all(map(math.isfinite, mean + std)) or min(std) <= 0:
            raise DollError(f"unknown --normalisation {text!r}; choose one of {', '.join([*PRESETS, 'timm'])}, or "
                            "MEAN/STD on pixels in [0, 1] (one value or three, comma-separated; e.g. "
                            "0.485,0.456,0.406/0.229,0.224,0.225)")
        name = "custom"

    def fit(values: list[float]) -> list[float]:
        if len(values) == in_channels:
            return list(values)
        return [sum(values) / len(values)] * in_channels  # 3 -> 1: their mean; 1 -> 3: repeated

    return {"name": name, "scale": 1 / 255, "mean": fit(mean), "std": fit(std)}


# -- weights ---------------------------------------------------------------------------------------

def _txv_name_of(path: Path, xrv) -> str | None:
    """The torchxrayvision weights name whose distributed file is called like ``path``."""
    names = [k for k, v in xrv.models.model_urls.items() if os.path.basename(v["weights_url"]) == path.name]
    return max(names, key=len) if names else None


def resolve_weights(s: ImportSettings, xrv) -> tuple[Path, str | None]:
    """The weights file, and (txv) the torchxrayvision weights name it is known as. With
    --from txv, --weights may be such a name: its file in torchxrayvision's cache."""
    given = Path(s.weights).expanduser()
    if xrv is not None and not given.exists() and s.weights in xrv.models.model_urls:
        name = s.weights
        path = Path(xrv.utils.get_cache_dir()).expanduser() / os.path.basename(xrv.models.model_urls[name]["weights_url"])
        if not path.is_file():
            raise DollError(f"--weights {name}: torchxrayvision's weights {name} are not in its cache ({path}); doll "
                            "never downloads: let torchxrayvision fetch them once, or name a weights file")
        return path.resolve(), name
    path = given.resolve()
    return path, _txv_name_of(path, xrv) if xrv is not None else None


def read_state(path: Path, s: ImportSettings, txv_name: str | None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The weights (every tensor finite) and, of a torchxrayvision state dict, its operating
    points (``op_threshs``: NaN marks an output its weights never learnt)."""
    try:
        state = dict(read_weights_file(path, "--weights ", finite=False))
    except DollError as exc:
        if s.source != "txv" or "Python objects" not in str(exc):
            raise
        name = txv_name or ("resnet50-res512-all" if s.arch.startswith("resnet") else "densenet121-res224-all")
        model = "ResNet" if name.startswith("resnet") else "DenseNet"
        raise DollError(f"{exc}; torchxrayvision ships its DenseNets as pickled models: make a state dict with two "
                        f"lines of torchxrayvision, `m = xrv.models.{model}(weights=\"{name}\")` and "
                        f"`torch.save(m.state_dict(), \"{name}.pt\")`, then import {name}.pt") from None
    op = state.pop("op_threshs", None) if s.source == "txv" else None
    return check_weights(path, state), op


def _first_conv_key(net: nn.Module) -> str | None:
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"{name}.weight"
    return None


def load_network(net: nn.Module, state: dict[str, torch.Tensor], s: ImportSettings, outputs: int,
                 in_channels: int, path: Path) -> None:
    """``state`` into ``net``, all of it or nothing: a head of another size than the classes
    is one error naming both numbers; other missing or misshapen weights say what the file is not."""
    own = net.state_dict()
    needed = [k for k in own if not k.endswith("num_batches_tracked")]
    missing = [k for k in needed if k not in state]
    shaped = [k for k in needed if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    extra = [k for k in state if k not in own]
    what = {"torchvision": "torchvision", "timm": "timm", "txv": "torchxrayvision"}[s.source]
    if shaped and not missing and not extra:
        other = build_network(s.source, s.arch, outputs + 1, in_channels).state_dict()
        head = [k for k in own if tuple(other[k].shape) != tuple(own[k].shape)]
        if set(shaped) <= set(head):
            found = int(state[shaped[0]].shape[0])
            if s.source == "txv":
                raise DollError(f"--weights {path}: its head ({shaped[0]}) has {found} outputs but torchxrayvision's "
                                f"{s.arch} has {outputs}; is it a torchxrayvision {s.arch} state dict?")
            raise DollError(f"--weights {path}: its {s.arch} head ({shaped[0]}) has {found} outputs but --classes names "
                            f"{outputs} classes; name one class per output, in the order of the outputs")
    if missing or shaped or extra:
        first = (missing or shaped or extra)[0]
        raise DollError(f"--weights {path}: {len(missing) + len(shaped)} of the {len(needed)} weights of a {what} "
                        f"{s.arch} are missing from the file or have another shape, and {len(extra)} of its tensors "
                        f"are not the network's (first: {first}); is it a {what} {s.arch} state dict?")
    full = {k: state.get(k, own[k]) for k in own}  # num_batches_tracked: the network's own where the file has none
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in full.items()})


# -- the ensemble folder ---------------------------------------------------------------------------

def ensemble_members(out: Path) -> list[tuple[Path, dict]]:
    """The members already in ``out`` with their doll sections (read-only; each checked and
    finished, as explain will read them). A folder that is one classifier itself is refused."""
    if not out.is_dir() or not any(out.iterdir()):
        return []
    _require_ensemble_output(out)
    if (out / "model.safetensors").exists():
        raise DollError(f"--out {out} is a classifier folder itself, not an ensemble folder of member_* folders; "
                        "choose the folder above it or another --out")
    dirs = sorted(p for p in out.glob("member_*") if p.is_dir())
    members = [(d, read_config(d, kind="classifier")["doll"]) for d in dirs]
    planned, _ = ensemble_plan(out)
    started = {d.name for d in dirs}
    for i in range(planned):
        if f"member_{i}" not in started or not (out / f"member_{i}" / "metrics.json").is_file():
            raise DollError(f"{out} is an unfinished doll train-classifiers run (member {i + 1} of {planned} not "
                            "finished); finish it with --resume before adding a classifier to it")
    return members


def _require_ensemble_output(out: Path) -> None:
    """A folder with files that an import may add a member to: a doll output of train-classifiers or an import."""
    if not is_doll_output(out):
        raise DollError(f"{out} is not empty and was not written by doll (it has no {MANIFEST_NAME}); import into a "
                        "new or empty folder, or into a doll classifier ensemble folder")
    command = read_manifest(out)[0].get("command")
    if command not in ENSEMBLE_COMMANDS:
        raise DollError(f"--out {out} is the output of doll {command}, not a classifier ensemble; choose another "
                        "--out")


def open_ensemble(out: Path, weights: Path) -> Path:
    """``out`` ready for a new member, locked for the rest of the command: a new or empty
    folder becomes a doll output (:func:`doll.utils.prepare_out_dir`); a folder with files
    must be a doll classifier ensemble, and nothing in it is replaced."""
    if out.is_symlink():
        raise DollError(f"--out {out} is a symbolic link; name the real folder")
    if out.exists() and not out.is_dir():
        raise DollError(f"--out {out} is a file; choose a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return prepare_out_dir(out, command=COMMAND, inputs={"--weights": str(weights)},
                               holds="a classifier ensemble")
    check_inputs_apart(out, {"--weights": str(weights)})
    with os_errors(out):
        lock_output(out)
        _require_ensemble_output(out)
        remove_leftover_temporaries(out)
    return out


def _next_member(out: Path) -> Path:
    k = 0
    while (out / f"member_{k}").exists():
        k += 1
    return out / f"member_{k}"


# -- the import ------------------------------------------------------------------------------------

def _txv_arch(name: str) -> str:
    """The architecture of a torchxrayvision weights name (``all``, ``densenet121-res224-chex``, ``resnet50-res512-all``)."""
    return next((a for a in TXV_ARCHS if name.startswith(a)), "densenet121")


def _txv_outputs(xrv, arch: str) -> list[str]:
    cls = xrv.models.DenseNet if arch.startswith("densenet") else xrv.models.ResNet
    return list(cls.targets)


def _check_against_txv(xrv, net: nn.Module) -> None:
    """doll builds torchxrayvision's DenseNet from torchvision's: check that it computes what
    torchxrayvision's own class computes with the same weights."""
    ref = xrv.models.DenseNet(weights=None).eval()
    ref.load_state_dict(net.state_dict())  # the same weight names
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 2048 - 1024
    with torch.no_grad():
        a, b = net.eval()(x), ref(x)
    if not torch.allclose(a, b, rtol=1e-4, atol=1e-4 * (1 + float(b.abs().max()))):
        raise RuntimeError(f"doll's copy of torchxrayvision {xrv.__version__}'s DenseNet computes another function "
                           f"(largest difference {float((a - b).abs().max()):.3g}); report it")


def _txv_mapping(xrv, s: ImportSettings, state: dict, op, txv_name: str | None, classes: list[str], by_hand: dict,
                 source: dict, weights: Path):
    """A torchxrayvision classifier's outputs mapped onto doll's classes by name, with its
    operating points as logit shifts; records them in ``source``. Returns (state, outputs,
    class_map, unmapped, logit shifts, native image size)."""
    source["library_version"] = xrv.__version__
    if all(k.startswith("model.") for k in state):  # the state dict of xrv.models.ResNet (its torchvision net)
        state = {k.removeprefix("model."): v for k, v in state.items()}
    outputs = _txv_outputs(xrv, s.arch)
    known = xrv.models.model_urls.get(txv_name, {}) if txv_name else {}
    if op is None and known.get("op_threshs") is not None:
        op = torch.tensor([float(v) for v in known["op_threshs"]])
    trained = [True] * len(outputs)
    if known.get("labels"):
        trained = [bool(label) for label in known["labels"]]
    if op is not None:
        op = op.double().flatten()
        if len(op) != len(outputs):
            raise DollError(f"--weights {weights}: op_threshs has {len(op)} values, not one per output "
                            f"({len(outputs)}); is it a torchxrayvision {s.arch} state dict?")
        trained = [t and bool(torch.isfinite(v)) for t, v in zip(trained, op)]  # NaN: an output never trained
    class_map, why = txv_class_map(classes, outputs, trained, by_hand)
    shift = {}
    if op is not None:
        for c, o in class_map.items():
            t = float(op[outputs.index(o)]) if o is not None else math.nan
            if 0 < t < 1:  # its operating point becomes probability 0.5: sigmoid(logit - logit(t))
                shift[c] = -math.log(t / (1 - t))
        source["operating_points"] = {o: float(v) for o, v in zip(outputs, op) if math.isfinite(float(v))}
    if txv_name:
        source["txv_weights"] = txv_name
    native = int(known.get("input_resolution") or TXV_NATIVE_SIZE[s.arch])
    return state, outputs, class_map, why, shift, native


def _check_against_members(existing: list, out: Path, sha: str, s: ImportSettings, class_map: dict, size: int,
                           notes: list[str]) -> None:
    """Refuse an import the ensemble in ``out`` already holds, or one into lung-field-only
    classifiers; note a size that differs from the first member's."""
    for d, cfg in existing:
        if cfg.get("lung_model"):
            raise DollError(f"the classifiers in {out} were trained with --lung-model (they see the lung field only, "
                            f"as {d.name} says); an imported classifier saw whole images: import into another --out")
        theirs = cfg.get("source") or {}
        if theirs.get("weights_sha256") == sha and cfg.get("arch") == s.arch and theirs.get("class_map") == class_map:
            raise DollError(f"{d} already holds this classifier (the same weights, arch and classes); nothing imported")
    if existing and existing[0][1]["image_size"] != size:
        _note(f"{existing[0][0].name} in {out} is {existing[0][1]['image_size']} px, this one {size} px: doll explain "
              f"runs every member at {existing[0][0].name}'s size unless given --image-size", notes, s.progress)


@releases_outputs
def import_classifier(settings: ImportSettings | None = None, **kwargs) -> dict:
    """Add a classifier from torchvision, timm or torchxrayvision to the ensemble folder ``out``
    as ``member_<k>``; returns (and writes to its ``metrics.json``) what was imported and how
    its outputs map onto the classes."""
    s = settings or ImportSettings(**kwargs)
    t0 = time.time()
    notes: list[str] = []
    xrv = require_library("txv") if s.source == "txv" else None
    if s.source == "timm":
        require_library("timm")
    if s.source == "txv" and s.arch not in TXV_ARCHS:
        raise DollError(f"--arch {s.arch!r} is not a torchxrayvision classifier; choose one of {', '.join(TXV_ARCHS)}")
    out = Path(s.out).expanduser()
    weights, txv_name = resolve_weights(s, xrv)
    if txv_name and _txv_arch(txv_name) != s.arch:
        raise DollError(f"--weights {s.weights} are torchxrayvision's {txv_name}, a {_txv_arch(txv_name)}, not a "
                        f"{s.arch}; pass --arch {_txv_arch(txv_name)}")
    existing = ensemble_members(out)
    classes, by_hand = parse_classes(s, existing[0][1]["classes"] if existing else None)
    state, op = read_state(weights, s, txv_name)
    sha = sha256_of(weights)

    source: dict = {"library": s.source, "library_version": None, "weights": str(weights), "weights_sha256": sha}
    if s.source == "txv":
        state, outputs, class_map, why, shift, native = _txv_mapping(xrv, s, state, op, txv_name, classes, by_hand,
                                                                     source, weights)
        in_channels = 1
    else:
        lib = require_library("timm") if s.source == "timm" else None
        import torchvision

        source["library_version"] = lib.__version__ if lib is not None else torchvision.__version__
        outputs, class_map, why, shift = list(classes), {c: c for c in classes}, {}, {}
        net = build_network(s.source, s.arch, len(outputs), 3)
        key = _first_conv_key(net)
        in_channels = 1 if key in state and state[key].ndim == 4 and state[key].shape[1] == 1 else 3
        cfg = getattr(net, "pretrained_cfg", None) or {}
        native = int((cfg.get("input_size") or (3, 224, 224))[-1])
    size = s.image_size or native
    if s.source == "txv" or in_channels != 3:
        net = build_network(s.source, s.arch, len(outputs), in_channels)
    load_network(net, state, s, len(outputs), in_channels, weights)
    if s.source == "txv" and s.arch == "densenet121":
        _check_against_txv(xrv, net)
    source.update(arch=s.arch, in_channels=in_channels, outputs=outputs, class_map=class_map,
                  logit_shift=shift, normalisation=parse_normalisation(s.normalisation, s.source, in_channels, net),
                  native_image_size=native, unmapped_logit=UNMAPPED_LOGIT)
    if why:
        source["unmapped"] = why
    ignored = [o for o in outputs if o not in class_map.values()]
    if ignored:
        source["ignored_outputs"] = ignored
    index, shifts = output_index(classes, source)
    model = ImportedClassifier(net, in_channels, source["normalisation"], index, shifts).eval()
    try:
        with torch.no_grad():
            y = model(torch.zeros(2, 1, size, size))
    except (RuntimeError, ValueError, AssertionError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DollError(f"the imported {s.source} {s.arch} does not run on {size} px images ({first}); choose "
                        f"another --image-size (its own is {native})") from None
    if tuple(y.shape) != (2, len(classes)) or not bool(torch.isfinite(y).all()):
        raise DollError(f"the imported {s.source} {s.arch} gives outputs of shape {tuple(y.shape)} "
                        f"({'finite' if bool(torch.isfinite(y).all()) else 'not finite'}); expected "
                        f"{len(classes)} finite logits per image: are the weights damaged?")
    if size != native:
        _note(f"the {s.source} {s.arch} weights expect {native} px images; at --image-size {size} its predictions may "
              f"mean little", notes, s.progress)
    _check_against_members(existing, out, sha, s, class_map, size, notes)

    out = open_ensemble(out, weights)
    folder = _next_member(out)
    doll_config = {"kind": "classifier", "arch": s.arch, "classes": classes, "in_channels": 1, "image_size": size,
                   "normalisation": NORMALISATION, "lung_model": "", "init": f"import:{s.source}",
                   "source": source, "run": {"command": COMMAND, **asdict(s)}}
    save_model(folder, model, doll_config)
    result = {"command": COMMAND, "member": str(folder), "library": s.source, "arch": s.arch, "image_size": size,
              "classes": classes, "class_map": class_map, "unmapped": why, "ignored_outputs": ignored,
              "weights": str(weights), "weights_sha256": sha, "notes": notes, "doll_version": tool_version(),
              "seconds": round(time.time() - t0, 2), "finished": True}
    write_json(folder / "metrics.json", result)  # last: the member is finished
    return result
