"""Training throughput of doll's three trained networks, images per second, with and
without AMP + channels_last (and, with --compile, torch.compile): what a GPU server's
epochs will cost, measured on the networks doll builds.

* ``classifier``: stage 1, ``build_classifier(--arch, 14)`` with BCE on 14 logits;
* ``pretrain``: stage 3, ``build_segmenter(--decoder, --encoder, 14)`` (14 DoLL classes)
  with per-pixel BCE;
* ``finetune``: stage 4, the same segmenter with 5 outputs (JSRT's structures).

Each row: one optimiser (AdamW) step per batch on random data of the real shape (one
channel, ``--image-size``), ``--warmup`` untimed steps, then ``--steps`` timed ones
(CUDA synchronised). AMP is the engine's (bf16 where the GPU has it, else fp16 with a
gradient scaler); channels_last as the engine sets it. The data loader is not in these
figures: ``benchmarks/decode_cache.py`` and ``doll.data`` time that. One JSON list on stdout.

    python benchmarks/train_throughput.py --device cuda                 # DenseNet-121 / PSPNet-ResNet-34, 224 px
    python benchmarks/train_throughput.py --device cpu --arch resnet18 --encoder resnet18 --image-size 64 --steps 2
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from doll.models.classifier import CLASSIFIER_ARCHS, build_classifier  # noqa: E402
from doll.models.segmenter import build_segmenter  # noqa: E402
from doll.train.engine import amp_dtype  # noqa: E402
from doll.utils import resolve_device  # noqa: E402

NETWORKS = ("classifier", "pretrain", "finetune")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="densenet121", choices=CLASSIFIER_ARCHS)
    p.add_argument("--decoder", default="pspnet")
    p.add_argument("--encoder", default="resnet34")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--networks", default=",".join(NETWORKS))
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (CUDA only)")
    return p.parse_args(argv)


def build(network: str, a) -> tuple[torch.nn.Module, int, bool]:
    """The network, its outputs and whether it segments."""
    if network == "classifier":
        return build_classifier(a.arch, 14), 14, False
    classes = 14 if network == "pretrain" else 5
    return build_segmenter(a.decoder, a.encoder, classes), classes, True


def time_row(network: str, a, device: torch.device, fast: bool, compiled: bool = False) -> dict:
    torch.manual_seed(0)
    model, classes, segments = build(network, a)
    model = model.to(device).train()
    dtype = amp_dtype(device) if fast else None
    if fast and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    x = torch.randn(a.batch_size, 1, a.image_size, a.image_size, device=device)
    if fast and device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    shape = (a.batch_size, classes, a.image_size, a.image_size) if segments else (a.batch_size, classes)
    y = (torch.rand(shape, device=device) > 0.5).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = step_model(x)
            out = out[0] if isinstance(out, tuple) else out
            loss = loss_fn(out.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(a.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    row = {"network": network, "arch": a.arch if network == "classifier" else f"{a.decoder}-{a.encoder}",
           "image_size": a.image_size, "batch_size": a.batch_size, "amp_channels_last": fast, "compiled": compiled,
           "amp_dtype": str(dtype).replace("torch.", "") if dtype else None,
           "images_per_s": round(a.steps * a.batch_size / seconds, 2), "s_per_step": round(seconds / a.steps, 4)}
    if device.type == "cuda":
        row["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return row


def main(argv=None) -> int:
    a = parse_args(argv)
    device = resolve_device(a.device)
    rows = []
    for network in a.networks.split(","):
        variants = [(False, False), (True, False)] if device.type == "cuda" else [(False, False)]
        if a.compile and device.type == "cuda":
            variants.append((True, True))
        for fast, compiled in variants:
            row = time_row(network, a, device, fast, compiled)
            row.update(device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                       or platform.machine(), torch=torch.__version__, threads=torch.get_num_threads())
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
