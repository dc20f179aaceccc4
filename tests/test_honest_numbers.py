"""Numbers that cannot mislead (issue 34, item 2-3): finetune's curve and headline name
their split, one seed reports no spread, intervals come from the per-image scores, pretrain
reports a best step and the ids it trained on, and finetune warns when its test images were
among them. On e313c11 these fail: the curve says val_iou, mean_iou_std is 0.0 for one seed,
there is no headline, pretrain reports best_epoch and no ids, and nothing warns."""
from __future__ import annotations

import json
import shutil

from conftest import SIZE, cli, cli_exit


def test_finetune_names_its_split_and_headline(pipeline, tmp_path, capsys):
    out = tmp_path / "ft"
    code, err = cli_exit(capsys, "finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", pipeline["phantom"] / "anatomy",
                         "--init", "random", "--encoder", "resnet18", "--max-steps", 4, "--image-size", SIZE,
                         "--out", out, "--quiet")
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert list(m)[0] == "headline" and m["headline"]["split"] == m["test_split"]
    assert m["headline"]["metric"] == "mean_iou" and m["headline"]["value"] == m["mean_iou"]
    lo, hi = m["mean_iou_ci95"]
    assert lo <= m["mean_iou"] <= hi
    assert "mean_iou_std" not in m  # one seed: no spread to report
    curve = m["runs"][0]["curve"]
    assert curve and all("test_iou" in c and "val_iou" not in c for c in curve)
    assert "test_images_seen_in_pretraining" not in m  # random init: nothing to compare


def test_pretrain_records_ids_and_finetune_warns_of_leakage(pipeline, tmp_path, capsys):
    pre = json.loads((pipeline["pretrain"] / "metrics.json").read_text())
    assert "best_step" in pre and "best_epoch" not in pre
    ids = (pipeline["pretrain"] / "pretrained_ids.txt").read_text().split()
    assert len(ids) == pre["n_train"] + pre["n_val"]

    from doll.data.registry import open_dataset

    leaky = tmp_path / "leaky"
    shutil.copytree(pipeline["pretrain"], leaky)
    anatomy = open_dataset("jsrt", str(pipeline["phantom"] / "anatomy"))
    (leaky / "pretrained_ids.txt").write_text("".join(f"{it.id}\n" for it in anatomy.items()))  # every image
    out = tmp_path / "ft"
    code, err = cli_exit(capsys, "finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", pipeline["phantom"] / "anatomy",
                         "--init", leaky, "--max-steps", 2, "--out", out, "--quiet")
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["test_images_seen_in_pretraining"] == m["n_test"] > 0
    assert f"warning: {m['n_test']} of the {m['n_test']} test images" in err


def test_explainers_report_progress_per_batch_of_images():
    """explain's bar moves per batch of images (it moved once per 64-image block before)."""
    import torch

    from doll.explanation.base import make_explainer

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    images = torch.randn(6, 1, 4, 4)
    targets = [[0], [1, 2], [], [0], [2], [1]]
    for method, per_image in (("ig", 1.0), ("ig-smooth", 1.0)):
        explainer = make_explainer(method, steps=4, baseline="zero", batch_size=8, precision="fp32", seed=0)
        calls = []
        explainer.progress = calls.append
        explainer.attribute(model, images, targets)
        assert len(calls) >= 3 and abs(sum(calls) - 5 * per_image) < 1e-9  # 5 images have targets, 2 per batch


def test_a_large_completeness_error_is_warned_with_the_steps_that_fix_it():
    from doll.explanation.run import completeness_warning

    assert completeness_warning({"median": 0.05, "p90": 0.1, "max": 0.3}, 16) == ""
    warning = completeness_warning({"median": 0.36, "p90": 1.33, "max": 300.0}, 8)  # issue 34's figures at --steps 8
    assert "--steps 8" in warning and "try --steps 43" in warning


def test_data_check_states_the_patient_key(phantom):
    from doll.data.check import check_dataset, format_report

    report = check_dataset("phantom", str(phantom), progress=False)
    assert report["patients"] > 0 and report["patient_key"]
    assert f"patients: {report['patients']} (split key:" in format_report(report)
