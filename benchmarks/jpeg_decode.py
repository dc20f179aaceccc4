"""Would decoding JPEGs on the GPU pay? The cold read of a CheXpert-size JPEG split into its
parts, and nvJPEG beside it (issue 37: "consider GPU JPEG decoding where the GPU suite says
decoding bounds training").

Every epoch after the first reads doll's decode cache (memory-mapped uint8 at the training
size), so JPEGs are decoded once per data set and size: in the cold cache build. This times
that build's per-image work on one core, through doll's own functions, on synthetic
chest-film JPEGs of CheXpert-v1.0-small's sizes (``scale.py``'s generator, quality 90;
``--film 2828x2320`` for the full-resolution set's):

* ``read_raw_ms``: ``doll.data.images.read_raw`` (file read + ``cv2.imdecode``);
* ``preprocess_ms``: ``doll.data.images.preprocess`` (the robust percentile normalisation
  and the resize to ``--size``), which a GPU decoder would not replace;
* with CUDA, ``nvjpeg_ms``: ``torchvision.io.decode_jpeg(..., device="cuda")`` on batches of
  ``--batch`` files (CUDA synchronised), per image.

``decode_share`` = read_raw / (read_raw + preprocess): the most of the cold build that GPU
decoding could remove. One JSON object on stdout.

    python benchmarks/jpeg_decode.py --images 256                  # CPU parts only, where no GPU is
    python benchmarks/jpeg_decode.py --images 1024 --device cuda   # with nvJPEG
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from doll.data.images import preprocess, read_raw  # noqa: E402
from scale import chest_film  # noqa: E402  (the synthetic chest film of the rehearsal)


def make_jpegs(folder: Path, n: int, seed: int = 0, height: int = 390, width: int = 320) -> list[Path]:
    import cv2

    rng = np.random.default_rng(seed)
    templates = [chest_film(rng, height, width) for _ in range(4)]
    paths = []
    for i in range(n):
        img = templates[i % len(templates)]
        img = np.clip(img.astype(np.int16) + rng.integers(-8, 9, img.shape, dtype=np.int16), 0, 255).astype(np.uint8)
        if i % 7 == 6:  # about one lateral in seven
            img = np.ascontiguousarray(img.T)
        path = folder / f"{i:05d}.jpg"
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def per_image_ms(fn, items) -> float:
    fn(items[0])  # warm
    t0 = time.perf_counter()
    for it in items:
        fn(it)
    return (time.perf_counter() - t0) / len(items) * 1e3


def nvjpeg_ms(paths: list[Path], batch: int, device: str) -> float:
    import torch
    from torchvision.io import decode_jpeg, read_file

    data = [read_file(str(p)) for p in paths]  # the files' bytes, read before the clock (read_raw_ms has them)
    decode_jpeg(data[:batch], device=device)  # warm: nvJPEG's handles and buffers
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for lo in range(0, len(data), batch):
        decode_jpeg(data[lo:lo + batch], device=device)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / len(data) * 1e3


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", type=int, default=224, help="the training size the cache stores")
    ap.add_argument("--batch", type=int, default=64, help="files per nvJPEG call")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda to time nvJPEG too")
    ap.add_argument("--film", default="390x320", help="frontal films' HEIGHTxWIDTH (CheXpert-v1.0-small's; "
                                                    "the full-resolution set's are about 2828x2320)")
    a = ap.parse_args(argv)
    import cv2

    cv2.setNumThreads(1)  # one core: the cache build runs one image per core
    with tempfile.TemporaryDirectory(prefix="doll-jpeg-") as tmp:
        height, width = (int(v) for v in a.film.lower().split("x"))
        paths = make_jpegs(Path(tmp), a.images, height=height, width=width)
        raws = [read_raw(p) for p in paths]
        read_ms = per_image_ms(read_raw, paths)
        prep_ms = per_image_ms(lambda raw: preprocess(raw, a.size), raws)
        out = {"images": a.images, "film": a.film, "size": a.size, "jpeg_kb": round(sum(p.stat().st_size for p in paths)
                                                                       / len(paths) / 1024, 1),
               "read_raw_ms": round(read_ms, 3), "preprocess_ms": round(prep_ms, 3),
               "decode_share": round(read_ms / (read_ms + prep_ms), 3),
               "cpu": platform.processor() or platform.machine()}
        if a.device.startswith("cuda"):
            import torch

            out["nvjpeg_ms"] = round(nvjpeg_ms(paths, a.batch, a.device), 4)
            out["batch"] = a.batch
            out["gpu"] = torch.cuda.get_device_name(a.device)
    out["note"] = ("per image on one core; read_raw = file read + cv2.imdecode, preprocess = percentile "
                   "normalisation + resize (doll's own functions); decode_share: the most of the cold cache build "
                   "that GPU decoding could remove (preprocess stays on the CPU)")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
