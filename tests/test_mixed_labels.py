"""benchmarks/mixed_labels.py: a 2-fraction sweep on a tiny phantom, JSON rows out."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import doll

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "mixed_labels.py"


def test_mixed_labels_sweep_tiny(tmp_path):
    doll.make_phantoms(tmp_path / "ph", n=40, size=32, progress=False)
    out = tmp_path / "mx"
    env = dict(os.environ, DOLL_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--root", str(tmp_path / "ph"), "--fractions", "0.1,0.5",
                           "--pooling", "max", "--epochs", "1", "--image-size", "32", "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "mixed_labels.json").read_text())
    rows = doc["rows"]
    assert {(r["label_fraction"], r["method"]) for r in rows} == {
        (f, m) for f in (0.1, 0.5) for m in ("segmentation_only", "alternating_max")}
    masks = {r["label_fraction"]: r["n_masks"] for r in rows}
    assert 1 <= masks[0.1] < masks[0.5]
    for r in rows:
        assert r["mean_iou"] is None or 0 <= r["mean_iou"] <= r["mean_f1"] <= 1
    assert [json.loads(ln) for ln in proc.stdout.splitlines() if ln.strip()] == rows
