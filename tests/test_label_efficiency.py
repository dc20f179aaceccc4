"""benchmarks/label_efficiency.py: a 2 fractions x 2 modes sweep on a tiny phantom, JSON + PNG out."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import doll

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "label_efficiency.py"


def test_label_efficiency_tiny(tmp_path):
    doll.make_phantoms(tmp_path, n=40, size=32, progress=False)
    out = tmp_path / "le"
    env = dict(os.environ, DOLL_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--root", str(tmp_path / "anatomy"), "--inits", "random",
                           "--modes", "full,adapter", "--fractions", "0.25,1.0", "--epochs", "1",
                           "--encoder", "resnet18", "--image-size", "32", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "label_efficiency.json").read_text())
    cells = doc["cells"]
    assert len(cells) == 4
    grid = {(m, f) for m in ("full", "adapter") for f in (0.25, 1.0)}
    assert {(c["mode"], c["label_fraction"]) for c in cells} == grid
    for c in cells:
        assert c["init"] == "random"
        assert 0.0 <= c["mean_iou"] <= 1.0 and 0.0 <= c["mean_dice"] <= 1.0
        assert c["n_train"] >= 1 and c["trainable_params"] > 0 and c["seconds"] >= 0
        assert (out / f"random_{c['mode']}_{c['label_fraction']:g}").is_dir()
    n = {c["label_fraction"]: c["n_train"] for c in cells}
    assert n[0.25] < n[1.0]
    adapter = {c["trainable_params"] for c in cells if c["mode"] == "adapter"}
    full = {c["trainable_params"] for c in cells if c["mode"] == "full"}
    assert max(adapter) < min(full)
    assert doc["settings"]["fractions"] == [0.25, 1.0] and "label_efficiency.py" in doc["command"]
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines == cells  # stdout: exactly one JSON line per cell (the stages' chatter goes to stderr)
    assert (out / "label_efficiency.png").read_bytes()[:4] == b"\x89PNG"
