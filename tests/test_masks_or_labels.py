"""benchmarks/masks_or_labels.py: a tiny two-seed run of claims (c) and (d) (seg4cls and
mixed, the same step budget), the JSON's structure, resumption, the report."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import doll

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "masks_or_labels.py"


def load_script():
    """The script as a module (its folder on sys.path, as when run), for in-process invocations."""
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("masks_or_labels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args: str, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_masks_or_labels_tiny(tmp_path, capsys, monkeypatch):
    doll.make_phantoms(tmp_path / "ph", n=40, size=32, progress=False)
    out = tmp_path / "mol"
    env = dict(os.environ, DOLL_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    args = ["--root", str(tmp_path / "ph"), "--encoder", "resnet18", "--image-size", "32", "--max-steps", "2", "--val-every", "2",
            "--batch-size", "4", "--seeds", "2", "--seed", "3", "--summarizer", "rule,linear", "--mixed-fractions", "0.1",
            "--pooling", "max", "--device", "cpu", "--out", str(out)]
    first = run(*args, env=env)
    doc = json.loads((out / "masks_or_labels.json").read_text())
    assert doc["settings"]["max_steps"] == 2 and doc["settings"]["seeds"] == [3, 4]
    assert "masks_or_labels.py" in doc["command"]
    runs = {(r["task"], r["fraction"], r["seed"]) for r in doc["runs"]}
    assert runs == {(t, 0.1, s) for t in ("seg4cls", "mixed") for s in (3, 4)}
    for r in doc["runs"]:  # every network of every run trained the same budget
        assert r["ran_now"] and r["networks"] and all(n["steps"] == 2 for n in r["networks"].values())
        assert (out / r["folder"] / "metrics.json").is_file()
    methods = {(r["task"], r["method"]) for r in doc["rows"]}
    assert methods == {("seg4cls", m) for m in ("seg4cls_rule", "seg4cls_linear", "classifier", "multitask")} | {
        ("mixed", m) for m in ("segmentation_only", "alternating_max")}
    for r in doc["rows"]:
        assert r["mean_auroc"] is None or 0 <= r["mean_auroc"] <= 1
        if r["task"] == "mixed":
            assert r["mean_iou"] is None or 0 <= r["mean_iou"] <= r["mean_f1"] <= 1

    c = {e["method"]: e for e in doc["summary"]["c"]["methods"]}
    assert set(c) == {"seg4cls_rule", "seg4cls_linear", "classifier", "multitask"}
    assert c["classifier"]["paired_auroc"] is None
    p = c["seg4cls_linear"]["paired_auroc"]
    assert p["n_pairs"] == 2 and p["seeds"] == [3, 4] and len(p["t_interval"]) == 2
    by_seed = {(r["method"], r["seed"]): r["mean_auroc"] for r in doc["rows"] if r["task"] == "seg4cls"}
    assert p["per_seed"] == [by_seed[("classifier", s)] - by_seed[("seg4cls_linear", s)] for s in (3, 4)]
    assert c["seg4cls_rule"]["mean_auroc"]["n"] == 2
    d = {e["method"]: e for e in doc["summary"]["d"]["methods"]}
    assert set(d) == {"segmentation_only", "alternating_max"} and d["alternating_max"]["fraction"] == 0.1
    for key in ("mean_iou", "mean_f1", "mean_auroc"):
        assert d["segmentation_only"][f"paired_{key}"] is None
        assert d["alternating_max"][f"paired_{key}"]["n_pairs"] == 2
    lines = [json.loads(ln) for ln in first.stdout.splitlines() if ln.strip()]
    assert [(x["task"], x["seed"]) for x in lines] == [("seg4cls", 3), ("mixed", 3), ("seg4cls", 4), ("mixed", 4)]

    # the second invocation and the report in-process (a second interpreter would cost seconds)
    monkeypatch.setenv("DOLL_CACHE", env["DOLL_CACHE"])
    script = load_script()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "masks_or_labels.json"}
    capsys.readouterr()
    again = script.main(args)  # everything finished: nothing runs again, the summary is the same
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "masks_or_labels.json"} \
        == stamps
    assert not any(r["ran_now"] for r in again["runs"]) and len(again["runs"]) == 4
    assert not any(json.loads(ln)["ran_now"] for ln in capsys.readouterr().out.splitlines() if ln.strip())
    assert json.loads((out / "masks_or_labels.json").read_text())["summary"] == doc["summary"]

    script.main(["--report", "--out", str(out)])
    text = capsys.readouterr().out
    assert "### (c)" in text and "### (d)" in text and "| seg4cls_linear |" in text
    assert "| 0.1 | alternating_max | 2 |" in text
