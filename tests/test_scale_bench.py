"""benchmarks/scale.py at a tiny size: runs, prints one JSON list of rows with the fields
issue 37 asks for, and an extrapolation row last."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "scale.py"
FIELDS = ("stage", "n", "images_per_s", "per_core", "peak_rss_mb", "disk_mb", "seconds")


def test_scale_tiny(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "40", "--stages", "check,cache",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)  # one JSON list, nothing else on stdout
    assert isinstance(rows, list)
    stages = [r["stage"] for r in rows]
    assert stages == ["data check", "cache_cold", "cache_warm", "extrapolation"], stages
    for r in rows[:-1]:
        missing = [f for f in FIELDS if f not in r]
        assert not missing, (r["stage"], missing)
        assert 0 < r["n"] <= 40 and r["images_per_s"] > 0 and r["peak_rss_mb"] > 0 and r["seconds"] > 0
        assert r["disk_mb"] > 0
        if sys.platform == "linux" and r["stage"] != "data check":  # allocated and mapped-file memory, apart
            assert r["rss_anon_mb"] > 0 and r["rss_file_mb"] >= 0
    # the synthetic set: CheXpert-small's layout, CSV columns and image sizes
    root = tmp_path / "n40" / "CheXpert-v1.0-small"
    header = (root / "train.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] and len(header) == 19
    first = (root / "train.csv").read_text().splitlines()[1].split(",")[0]
    assert first.startswith("CheXpert-v1.0-small/train/patient") and first.endswith(".jpg")
    import cv2

    img = cv2.imread(str(tmp_path / "n40" / first), cv2.IMREAD_GRAYSCALE)
    assert img is not None and 300 <= min(img.shape) and max(img.shape) <= 410
    last = rows[-1]
    assert last["n"] == 224_316 and set(last["stages"]) == {"data check", "cache_cold", "cache_warm"}
    assert last["slowest_stage"] in last["stages"]
    assert "anon_rss_growth" in last["stages"]["cache_warm"]


def test_scale_explain_runs_explains_own_block_functions(tmp_path):
    """The explain row goes through doll.explanation.run's distill_block and write_block (so it cannot drift from
    what explain does) and states the CPU side apart from the distillation that runs on the GPU."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "40", "--stages", "explain", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)[0]
    assert row["stage"] == "explain_cpu" and row["targets"] > 0 and row["disk_mb"] > 0
    assert row["distill_s"] > 0 and 0 < row["cpu_fraction_of_gpu"] and row["parts_mb"] > 0


def test_scale_label_file_with_explains_default_targets(tmp_path):
    """--targets positive: the label file explains each image's positive labels only, as `doll explain`'s
    default does (the other maps zero), so its size and read rate are a real run's, not the worst case."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "40", "--stages", "labels", "--targets", "positive",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["stage"]: r for r in json.loads(proc.stdout)}
    read = rows["label_file_read"]
    assert read["targets"] == rows["label_file_write"]["targets"] == "positive"
    assert 0 < read["explained_maps_per_image"] < 4  # CheXpert-like: about 12 % of 14 classes positive
