"""``doll classifiers import``."""
from __future__ import annotations

from pathlib import Path

import typer
from doll_cli.main import Typer

classifiers_app = Typer(help="Classifiers you already have (torchvision, timm, torchxrayvision) as doll classifier "
                             "ensemble members.", no_args_is_help=True)


@classifiers_app.command("import")
def import_(
    source: str = typer.Option(..., "--from", help="The library the classifier comes from: torchvision, timm or txv (torchxrayvision: pip install 'doll\\[txv]')."),
    arch: str = typer.Option(..., "--arch", help="Its architecture in that library: e.g. resnet18, densenet121, convnext_tiny (timm: any timm.list_models() name; txv: densenet121, resnet50 or resnet101)."),
    weights: Path = typer.Option(..., "--weights", help="Its weights: a state dict (torch.save(model.state_dict())) or a .safetensors file; pickled models are refused. With --from txv also a torchxrayvision weights name (e.g. resnet50-res512-all), read from its cache; doll never downloads."),
    out: Path = typer.Option(Path("artifacts/classifiers"), "--out", help="The classifier ensemble folder: a new or empty folder, or one of doll train-classifiers or earlier imports; the classifier is added as its next member_<k>/ (nothing there is replaced)."),
    classes: str = typer.Option("", "--classes", help="The classes, comma-separated, in the order of the data set you will explain (default: the ensemble's in --out, else CheXpert's 14). torchvision/timm: one per output of the network, in order (the head's size is checked). txv: doll class names, each mapped onto a torchxrayvision output by name (Name=Output maps one by hand; unmapped classes get a constant logit)."),
    classes_file: Path = typer.Option(None, "--classes-file", help="The classes, one a line (instead of --classes)."),
    image_size: int = typer.Option(0, "--image-size", min=0, help="The image size explain runs the classifier at (0: the network's own: 224; txv's ResNets 512)."),
    normalisation: str = typer.Option("", "--normalisation", help="The network's input convention: imagenet (torchvision's default), txv (one channel in [-1024, 1024], txv's default), doll, unit ([0, 1]), timm (the architecture's own, timm's default) or MEAN/STD on pixels in [0, 1] (one value or three, comma-separated). doll's grey images are converted to it exactly (repeated into 3 channels for a 3-channel network)."),
    quiet: bool = typer.Option(False, "--quiet", help="Print the result only, without notes."),
):
    """Add a classifier you already have (torchvision, timm or torchxrayvision weights) to a doll classifier ensemble folder, for doll explain --classifiers. Prints how its outputs map onto the classes."""
    from doll.classification.importer import import_classifier as run

    result = run(source=source, arch=arch, weights=str(weights), out=str(out), classes=classes,
                 classes_file=str(classes_file) if classes_file else "", image_size=image_size,
                 normalisation=normalisation, progress=not quiet)
    typer.echo(f"imported: {result['member']} ({result['library']} {result['arch']}, {result['image_size']} px, "
               f"weights sha256 {result['weights_sha256'][:16]}...)")
    typer.echo("class mapping (doll class <- network output):")
    width = max(map(len, result["classes"]))
    for c in result["classes"]:
        output = result["class_map"].get(c)
        shown = output if output is not None else f"none ({result['unmapped'].get(c, 'unmapped')}): a constant logit"
        typer.echo(f"  {c:<{width}} <- {shown}")
    if result["ignored_outputs"]:
        typer.echo(f"ignored outputs: {', '.join(result['ignored_outputs'])}")
    mapped = [c for c in result["classes"] if result["class_map"].get(c) is not None]
    if len(mapped) < len(result["classes"]):
        typer.echo(f"explain the classes it answers with: --classes {','.join(mapped)}")
    typer.echo(f"metrics: {Path(result['member']) / 'metrics.json'}")
