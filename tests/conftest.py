"""Shared fixtures: tiny phantoms and one run of the pipeline through the CLI."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DOLL_CACHE", str(Path(__file__).resolve().parent.parent / "artifacts" / "cache-tests"))
XDIST_WORKER = bool(os.environ.get("PYTEST_XDIST_WORKER"))
if XDIST_WORKER:
    # pytest-xdist runs one worker per core (`-n auto` in pyproject.toml): one thread each, for the
    # worker and the subprocesses it starts. Two workers with a thread per core each would spin on
    # each other's cores (OpenMP's busy wait) and run several times slower than one worker.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
import torch  # after the thread settings above

if XDIST_WORKER:
    torch.set_num_threads(1)

SIZE = 32


class Points(torch.utils.data.Dataset):
    """``n`` random 1x4x4 images (a fixed seed), the data of the engine's own tests."""

    def __init__(self, n: int = 16):
        self.x = torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "index": i}


class ShrinkTask:
    """An engine task that shrinks a network's outputs on flattened images; subclasses
    say what a validation scores."""

    def loss(self, model, batch):
        return model(batch["image"].flatten(1)).pow(2).mean()

    def predict(self, model, batch):
        return {"y": model(batch["image"].flatten(1)).cpu().numpy()}


def cli(*args: str) -> None:
    """Run `doll ARGS` in-process; a non-zero exit raises SystemExit."""
    from doll_cli.main import main

    main([*map(str, args), "--quiet"] if args and args[0] not in ("labels", "show") else list(map(str, args)))


def cli_exit(capsys, *args: str) -> tuple[int, str]:
    """Run `doll ARGS`, return (exit code, stderr)."""
    from doll_cli.main import main

    code = 0
    try:
        main(list(map(str, args)))
    except SystemExit as exc:
        code = exc.code or 0
    return code, capsys.readouterr().err


@pytest.fixture(scope="session")
def phantom(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    cli("data", "phantom", "--out", root, "--n", 64, "--size", SIZE, "--seed", 0)
    return root


@pytest.fixture(scope="session")
def pipeline(phantom, tmp_path_factory) -> dict[str, Path]:
    """Stages 1-3 through the CLI, once per session (tiny settings)."""
    out = tmp_path_factory.mktemp("pipeline")
    paths = {"phantom": phantom, "classifiers": out / "cls", "labels": out / "labels.h5", "pretrain": out / "pre"}
    cli("train-classifiers", "--dataset", "phantom", "--root", phantom, "--out", paths["classifiers"],
        "--members", 2, "--epochs", 2, "--image-size", SIZE, "--batch-size", 16)
    cli("explain", "--classifiers", paths["classifiers"], "--dataset", "phantom", "--root", phantom,
        "--out", paths["labels"], "--steps", 4)
    cli("pretrain", "--labels", paths["labels"], "--out", paths["pretrain"], "--encoder", "resnet18",
        "--epochs", 2, "--batch-size", 8)
    return paths


def assert_ig_matches_captum(model, x, targets, baseline: str = "zero", steps: int = 6) -> None:
    """doll's batched Integrated Gradients equals Captum's (Gauss-Legendre, one image and target
    at a time) on ``model``: the equality test of tests/test_explain.py, also run on the
    classifiers ``doll classifiers import`` makes (tests/test_import_classifiers.py)."""
    import numpy as np
    from captum.attr import IntegratedGradients as CaptumIG

    from doll.explanation.ig import IntegratedGradients, make_baseline

    ours = IntegratedGradients(steps=steps, baseline=baseline, batch_size=10).attribute(model, x, targets)
    b = make_baseline(x, baseline)
    ref = CaptumIG(model)
    for i, tg in enumerate(targets):
        assert ours[i].shape == (len(tg), *x.shape[-2:])
        for k, c in enumerate(tg):
            a = ref.attribute(x[i:i + 1], baselines=b[i:i + 1], target=c, n_steps=steps, method="gausslegendre")
            a = a.sum(1)[0].detach().numpy()
            assert np.abs(a - ours[i][k]).max() <= 1e-4 * np.abs(a).max()
