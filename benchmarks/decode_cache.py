"""Time and memory of building the decoded-image cache for one data set split.

Every stage first decodes its images once into the cache (``doll/data/arrays.py``); on
CheXpert that is 224k JPEGs. This builds the cache in a fresh temporary folder (so
nothing cached earlier is reused), then memory-maps it a second time, and prints one
JSON object: ``images``, ``image_size``, ``build_s``, ``images_per_s``, ``reopen_s``,
``peak_rss_mb`` (process peak, imports included; the cache's memory-mapped pages count
in it), ``array_mb`` (the images and masks arrays themselves, for comparison),
``threads`` (decoder threads). With ``--baseline-json FILE`` (an earlier output) it adds
``baseline_ratio`` (baseline images/s / this run's; > 1.2 prints a warning on stderr).

    python benchmarks/decode_cache.py --dataset covidqu --root DIR --image-size 256 --structures infection,lungs
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default=None, help="one split (default: all images)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--structures", default="", help="comma-separated mask structures to decode too")
    ap.add_argument("--baseline-json", default=None, help="an earlier output to compare images/s with")
    args = ap.parse_args(argv)
    before = os.environ.get("DOLL_CACHE")
    with tempfile.TemporaryDirectory(prefix="doll-cache-bench-") as tmp:
        os.environ["DOLL_CACHE"] = tmp
        from doll.data import load_split

        structures = [s for s in args.structures.split(",") if s]
        t0 = time.perf_counter()
        _, arr = load_split(args.dataset, args.root, args.split, args.image_size, structures, progress=False)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_split(args.dataset, args.root, args.split, args.image_size, structures, progress=False)
        reopen = time.perf_counter() - t0
        n = len(arr.images)
        result = {"dataset": args.dataset, "split": args.split, "images": n, "image_size": args.image_size,
                  "structures": structures, "build_s": round(build, 2), "images_per_s": round(n / build, 1),
                  "reopen_s": round(reopen, 3),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "array_mb": round((arr.images.nbytes + (arr.masks.nbytes if structures else 0)) / 2**20, 1),
                  "threads": min(8, os.cpu_count() or 1)}
    if before is None:
        os.environ.pop("DOLL_CACHE", None)
    else:
        os.environ["DOLL_CACHE"] = before
    if args.baseline_json:
        with open(args.baseline_json) as fh:
            base = json.load(fh)
        result["baseline_ratio"] = round(base["images_per_s"] / result["images_per_s"], 3)
        if result["baseline_ratio"] > 1.2:
            print(f"warning: {result['baseline_ratio']}x slower than the baseline", file=sys.stderr)
    json.dump(result, sys.stdout)
    print()
    return result


if __name__ == "__main__":
    main()
