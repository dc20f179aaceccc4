"""benchmarks/explain_speed.py: runs, prints one JSON object, agrees with Captum, compares to a baseline.

One subprocess only (the imports alone take seconds on a small CPU): the run is given a
``--baseline-json`` 1000x faster than anything real, so the same output checks the
fields, the agreement with Captum, ``baseline_ratio`` and the slowdown warning.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "explain_speed.py"
TINY = ["--arch", "resnet18", "--image-size", "32", "--images", "1", "--targets", "3", "--steps", "4",
        "--device", "cpu"]
FIELDS = ("doll_s_per_image", "captum_naive_s_per_image", "captum_batched_s_per_image", "speedup_vs_naive",
          "speedup_vs_batched", "max_rel_diff", "peak_rss_mb", "device", "arch", "image_size", "targets", "steps",
          "torch", "threads", "baseline_ratio")


def test_explain_speed_tiny(tmp_path):
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"doll_s_per_image": 1e-6}))
    env = dict(os.environ, OMP_NUM_THREADS="1")  # tiny tensors: threads only add contention on a shared CPU
    proc = subprocess.run([sys.executable, str(SCRIPT), *TINY, "--baseline-json", str(baseline)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout  # exactly one JSON object on stdout
    out = json.loads(lines[0])
    missing = [f for f in FIELDS if f not in out]
    assert not missing, missing
    assert out["max_rel_diff"] <= 1e-4
    assert out["device"] == "cpu" and out["arch"] == "resnet18" and out["threads"] == 1
    assert (out["image_size"], out["targets"], out["steps"]) == (32, 3, 4)
    for f in ("doll_s_per_image", "captum_naive_s_per_image", "captum_batched_s_per_image", "peak_rss_mb"):
        assert out[f] > 0
    assert out["baseline_ratio"] > 1000  # any real run takes well over 1 ms per image
    assert "slower than the baseline" in proc.stderr


def test_ig_variants_cpu_rows_equal_reference():
    """benchmarks/ig_variants.py on the CPU: every float32 way gives the reference maps."""
    script = SCRIPT.parent / "ig_variants.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), "cpu", "resnet18", "32", "1"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.strip()]
    names = {r["name"] for r in rows}
    assert {"shared-vmap fp32 bs64", "shared-loop fp32 bs64", "ref fp32 replicated"} <= names
    assert {r["T"] for r in rows} == {3, 14}
    for r in rows:
        assert "error" not in r, r
        assert r["max_rel_diff"] < 1e-4, r  # float32 on the CPU: the ways differ only in batching
        assert r["s_per_img"] > 0 and r["comp_median"] >= 0


def test_explain_pipeline_tiny(tmp_path):
    """benchmarks/explain_pipeline.py: a whole tiny `doll explain` run, one JSON line, phases that add up."""
    script = SCRIPT.parent / "explain_pipeline.py"
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"steady_s_per_image": 1e-7}))
    env = dict(os.environ, OMP_NUM_THREADS="1", DOLL_CACHE=str(tmp_path / "cache"))
    args = ["--device", "cpu", "--arch", "resnet18", "--image-size", "32", "--images", "40", "--members", "1",
            "--steps", "2", "--block", "8", "--work", str(tmp_path / "work"), "--baseline-json", str(baseline)]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout  # the training log went to stderr
    out = json.loads(lines[0])
    assert (out["images"], out["members"], out["steps"], out["image_size"]) == (31, 1, 2, 32)  # the train split
    phases = out["seconds_by_phase"]
    assert {"attribute", "distill", "write_blocks", "wait_for_writer", "assemble"} <= set(phases)
    assert phases["attribute"] > 0 and sum(phases.values()) <= out["seconds"] + 0.05 * len(phases)
    assert 0 < out["steady_s_per_image"] <= out["seconds"] / out["images"]
    assert out["chexpert_hours_at_this_rate"] == round(191_027 * out["steady_s_per_image"] / 3600, 2)
    assert out["baseline_ratio"] > 1000 and "slower than the baseline" in proc.stderr
    assert (tmp_path / "work" / "labels-resnet18-32px-40img-1m.h5").exists()


def test_ig_steps_tiny(tmp_path):
    """benchmarks/ig_steps.py on phantoms: one run per step count, each compared with the most steps."""
    script = SCRIPT.parent / "ig_steps.py"
    env = dict(os.environ, OMP_NUM_THREADS="1", DOLL_CACHE=str(tmp_path / "cache"))
    args = ["--steps", "1,2,8", "--evaluate", "--work", str(tmp_path / "work"),
            "--set", "image_size=32", "--set", "device=cpu", "--set", "block=16"]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout
    out = json.loads(lines[0])
    assert out["reference_steps"] == 8 and set(out["by_steps"]) == {"1", "2", "8"}
    assert out["settings"] == {"image_size": 32, "device": "cpu", "block": 16}
    ref = out["by_steps"]["8"]
    assert "label_iou" not in ref and ref["attribute_s_per_image"] > 0
    for steps in ("1", "2"):
        row = out["by_steps"][steps]
        assert row["maps"] == ref["targets"] > 0
        assert 0 <= row["label_iou"]["p10"] <= row["label_iou"]["mean"] <= 1
        assert row["saliency_rel_l2"]["mean"] >= 0
        assert set(row["evaluate"]) >= {"iou", "topk_iou", "pointing", "ap"}
    # quadrature converges: 2 nodes agree with 8 better than 1 node does
    assert out["by_steps"]["2"]["saliency_rel_l2"]["mean"] < out["by_steps"]["1"]["saliency_rel_l2"]["mean"]
    assert out["by_steps"]["2"]["completeness_rel_error"]["median"] <= out["by_steps"]["1"]["completeness_rel_error"]["median"]
    bad = subprocess.run([sys.executable, str(script), "--steps", "4", "--work", str(tmp_path / "w2")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and "at least two" in bad.stderr


def test_label_seeds_tiny(tmp_path):
    """benchmarks/label_seeds.py on phantoms: each member alone and the ensemble, scored and summarised."""
    script = SCRIPT.parent / "label_seeds.py"
    env = dict(os.environ, OMP_NUM_THREADS="1", DOLL_CACHE=str(tmp_path / "cache"))
    args = ["--ensembles", "--work", str(tmp_path / "work"), "--set", "image_size=32", "--set", "device=cpu",
            "--set", "steps=2", "--set", "block=16"]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout
    out = json.loads(lines[0])
    assert out["members"] == 2 and out["settings"] == {"image_size": 32, "device": "cpu", "steps": 2, "block": 16}
    names = sorted(out["scores"])
    assert len(names) == 3 and [n.split("/")[-1] for n in names if "/" in n] == ["member_0", "member_1"]
    members = [out["scores"][n] for n in names if "/" in n]
    for k in ("iou", "topk_iou", "pointing", "ap"):
        s = out["over_members"][k]
        assert s["min"] == min(m[k] for m in members) and s["max"] == max(m[k] for m in members)
        assert abs(s["mean"] - (members[0][k] + members[1][k]) / 2) < 1e-3 and s["sd"] >= 0
        assert 0 <= s["min"] <= s["mean"] <= s["max"] <= 1
    assert out["over_ensembles"]["iou"]["sd"] == 0.0 and set(out["priors"]) == {"random"}
    # the labels beat the random map on the phantoms, member by member
    assert all(m["topk_iou"] > out["priors"]["random"]["topk_iou"] for m in members)
    bad = subprocess.run([sys.executable, str(script), "--classifiers", str(tmp_path / "nothing"), "--dataset",
                          "covidqu", "--work", str(tmp_path / "w2")], capture_output=True, text=True, timeout=120,
                         env=env)
    assert bad.returncode == 2 and "is not a folder" in bad.stderr


def test_label_seeds_keeps_each_runs_own_field_prior(tmp_path, monkeypatch):
    """Members trained with different lung models have different field priors: each run keeps
    its own, and the summary names one only when every run shares it."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import label_seeds

    for name in ("a", "b"):
        (tmp_path / name / "member_0").mkdir(parents=True)
    fields = {"labels-0.h5": 0.4, "labels-1.h5": 0.5}

    def evaluate(path, progress):
        score = {"iou": 0.3, "topk_iou": 0.35, "pointing": 0.6, "ap": 0.5}
        field = dict(score, topk_iou=fields[Path(path).name])
        return {"mean": score, "random": dict(score, topk_iou=0.1), "field_prior": field}

    monkeypatch.setattr(label_seeds, "explain", lambda **kw: None)
    monkeypatch.setattr(label_seeds, "evaluate_labels", evaluate)
    args = label_seeds.parse_args(["--classifiers", str(tmp_path / "a"), str(tmp_path / "b"), "--dataset", "covidqu",
                                   "--work", str(tmp_path / "w")])
    out = label_seeds.run(args)
    assert out["scores"]["a/member_0"]["field_prior"]["topk_iou"] == 0.4
    assert out["scores"]["b/member_0"]["field_prior"]["topk_iou"] == 0.5
    assert set(out["priors"]) == {"random"}  # no one field prior for runs with different fields
    fields["labels-1.h5"] = 0.4
    assert label_seeds.run(args)["priors"]["field_prior"]["topk_iou"] == 0.4


def test_ig_path_tiny(tmp_path):
    """benchmarks/ig_path.py on phantoms: each member's output along the IG path and its completeness by steps."""
    script = SCRIPT.parent / "ig_path.py"
    env = dict(os.environ, OMP_NUM_THREADS="1", DOLL_CACHE=str(tmp_path / "cache"))
    args = ["--work", str(tmp_path / "work"), "--image-size", "32", "--images", "3", "--steps", "1,4,16",
            "--grid", "6", "--device", "cpu", "--split", ""]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["images"] == 3 and out["reference_steps"] == 16 and len(out["alphas"]) == 6
    assert sorted(out["members"]) == ["member_0", "member_1"]
    for row in out["members"].values():
        path = row["path"]
        assert len(path["mean"]) == 6 and path["p10"][0] == path["p90"][0]  # one black baseline for every image
        assert all(lo <= m <= hi for lo, m, hi in zip(path["p10"], path["mean"], path["p90"]))
        assert row["path_variation_median"] >= row["abs_delta_median"] - 1e-4 > -1e-4
        steps = row["by_steps"]
        assert "top_overlap" not in steps["16"] and 0 <= steps["1"]["top_overlap"] <= 1
        assert steps["4"]["top_overlap"] >= steps["1"]["top_overlap"]  # quadrature converges towards 16 steps
        assert steps["16"]["abs_error"]["median"] < steps["1"]["abs_error"]["median"]
    bad = subprocess.run([sys.executable, str(script), "--work", str(tmp_path / "work"), "--image-size", "32",
                          "--class", "Nope", "--device", "cpu"], capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode != 0 and "--class 'Nope' is not one of" in bad.stderr


def test_train_throughput_tiny(capsys):
    """benchmarks/train_throughput.py (the GPU suite's training rows) runs and prints one JSON list."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "train_throughput", Path(__file__).resolve().parent.parent / "benchmarks" / "train_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--device", "cpu", "--arch", "resnet18", "--encoder", "resnet18", "--image-size", "32",
                       "--batch-size", "2", "--steps", "1", "--warmup", "0"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["network"] for r in rows] == ["classifier", "pretrain", "finetune"]
    assert all(r["images_per_s"] > 0 for r in rows)


def test_gpu_suite_dry_run(tmp_path):
    """benchmarks/gpu.sh --dry-run: every part of the GPU suite at toy sizes on the CPU, so that
    the suite does not rot between the rare sessions that have a GPU (about 15 s)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "suite.json"
    env = dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path))
    subprocess.run(["bash", str(root / "benchmarks" / "gpu.sh"), "--dry-run", str(out)], check=True, env=env,
                   timeout=300, capture_output=True)
    suite = json.loads(out.read_text())
    assert suite["dry_run"] is True
    for part in ("ig_vs_captum", "train_throughput", "explain_pipeline", "distill_device", "jpeg_decode",
                 "server_loaders"):
        assert not (isinstance(suite[part], dict) and suite[part].get("failed")), (part, suite[part])
    assert suite["distill_device"]["saliency_max_difference"] <= 1  # torch against OpenCV + NumPy
    assert 0 < suite["jpeg_decode"]["decode_share"] < 1 and suite["jpeg_decode"]["preprocess_ms"] > 0
    # what the GPUs would wait on: each trained network's GPU rate against this machine's loaders
    assert set(suite["bounds"]) == {"classifier", "pretrain"}, suite["bounds"]
    for b in suite["bounds"].values():
        assert b["bound"] in ("loader", "gpus") and b["gpus_fed"] == round(b["loader_images_per_s"] / b["gpu_images_per_s"], 2)


def test_gpu_device_script_keeps_to_the_budget_and_runs_doll_from_the_checkout(tmp_path):
    """benchmarks/gpu_device.sh (the suite on a bare GPU machine): doll and its CLI imported from the
    checkout, the suite's JSON and log written under $OUT. The parts share GPU_SUITE_BUDGET seconds
    (a lent GPU machine stops a command at 10 minutes, and a suite stopped before its end wrote
    nothing): parts past the budget are recorded as skipped, the JSON is written after every part."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, DOLL_PYTHON=sys.executable, OUT=str(tmp_path / "out"), DOLL_SITE=str(tmp_path / "site"),
               TMPDIR=str(tmp_path), GPU_SUITE_BUDGET="17")
    proc = subprocess.run(["bash", str(root / "benchmarks" / "gpu_device.sh"), "--dry-run"], env=env, timeout=120,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    found = proc.stderr.split("doll from ", 1)[1].split(" | ")[0]
    assert Path(found).resolve() == (root / "doll" / "__init__.py").resolve(), proc.stderr  # the checkout's doll
    suite = json.loads((tmp_path / "out" / "gpu-suite.json").read_text())
    assert suite["dry_run"] is True
    first = suite["ig_vs_captum"]
    assert not (isinstance(first, dict) and first.get("skipped"))  # ran (within what was left of the budget)
    assert suite["server_loaders"] == {"skipped": True,
                                       "reason": "the suite's budget of 17 s (GPU_SUITE_BUDGET) was spent"}
    assert not list((tmp_path / "out").glob("*.tmp"))
    assert "gpu.sh: wrote" in (tmp_path / "out" / "gpu-suite.log").read_text()
