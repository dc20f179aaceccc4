"""Nothing half-done is taken for done (issue 27): finished markers, one writer per output,
label-file attributes as data, damaged rows named, file system errors as one line,
leftover temporaries removed, and messages that say the fix."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import SIZE, cli, cli_exit

CLI = "import sys; from doll_cli.main import main; main(sys.argv[1:])"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def doll(*args, **kw) -> subprocess.Popen:
    """`doll ARGS` in a process of its own."""
    return subprocess.Popen([sys.executable, "-c", CLI, *map(str, args)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)


def one_error(capsys, fragment: str, *args) -> str:
    code, err = cli_exit(capsys, *args)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]
    return lines[0]


def wait_for(predicate, seconds: float = 180, what: str = "") -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def classifier_args(phantom, out, epochs=2):
    return ["train-classifiers", "--dataset", "phantom", "--root", phantom, "--out", out, "--members", 1,
            "--epochs", epochs, "--image-size", SIZE, "--batch-size", 16, "--quiet"]


# -- 1. finished markers --------------------------------------------------------------------------

def test_killed_classifier_run_is_refused_until_resumed(phantom, tmp_path, capsys):
    out = tmp_path / "c"
    proc = doll(*classifier_args(phantom, out, epochs=3))
    metrics = out / "member_0" / "metrics.json"

    def first_epoch_done():
        try:
            return json.loads(metrics.read_text())["epochs_run"] >= 1
        except (OSError, ValueError, KeyError):
            return False

    wait_for(first_epoch_done, what="the first epoch")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads(metrics.read_text())
    assert not state["finished"]
    explain = ["explain", "--classifiers", out, "--dataset", "phantom", "--root", phantom, "--split", "valid",
               "--steps", 2, "--out", tmp_path / "l.h5", "--quiet"]
    line = one_error(capsys, "is an unfinished run", *explain)
    progress = f"step {state['steps']} of {state['max_steps']}"  # the engine counts its budget in steps
    assert f"{out / 'member_0'} is an unfinished run ({progress}); finish it with --resume" in line
    assert not (tmp_path / "l.h5").exists()
    cli(*classifier_args(phantom, out, epochs=3), "--resume")
    assert json.loads(metrics.read_text())["finished"]
    cli(*explain)  # the finished ensemble is taken
    assert (tmp_path / "l.h5").is_file()


def test_missing_member_and_unfinished_pretrain_are_refused(pipeline, tmp_path, capsys):
    cls = tmp_path / "cls"
    shutil.copytree(pipeline["classifiers"], cls)
    shutil.rmtree(cls / "member_1")  # killed before the second member started
    one_error(capsys, f"{cls} is an unfinished run (member 2 of 2 not started); finish it with --resume", "explain",
              "--classifiers", cls, "--root", pipeline["phantom"], "--out", tmp_path / "l.h5")
    pre = tmp_path / "pre"
    shutil.copytree(pipeline["pretrain"], pre)
    (pre / "metrics.json").write_text(json.dumps({"finished": False, "epochs_run": 1, "history": []}))
    one_error(capsys, f"{pre} is an unfinished run (epoch 1 of 2); finish it with --resume", "finetune", "--task",
              "jsrt", "--dataset", "jsrt", "--root", pipeline["phantom"] / "anatomy", "--init", pre, "--out",
              tmp_path / "ft")
    one_error(capsys, f"{pre} is an unfinished run (epoch 1 of 2)", "labels", "refine", pipeline["labels"], "--model",
              pre, "--out", tmp_path / "r.h5")
    (pre / "metrics.json").unlink()  # killed while its first metrics.json was being written: last.pt only
    one_error(capsys, f"{pre} is an unfinished run (epoch ? of 2: it has last.pt but no metrics.json)", "labels",
              "refine", pipeline["labels"], "--model", pre, "--out", tmp_path / "r.h5")


def test_progress_counts_steps_when_the_run_does(tmp_path):
    from doll.errors import DollError
    from doll.models.checkpoint import require_finished, run_progress

    assert run_progress({"epochs_run": 2}, {"doll": {"settings": {"epochs": 5}}}) == "epoch 2 of 5"
    assert run_progress({"steps_run": 300, "max_steps": 1000}) == "step 300 of 1000"
    assert run_progress({"steps_run": 30}, {"doll": {"settings": {"max_steps": 90, "epochs": 1}}}) == "step 30 of 90"
    (tmp_path / "metrics.json").write_text(json.dumps({"finished": False, "steps_run": 30, "max_steps": 90}))
    with pytest.raises(DollError, match=r"is an unfinished run \(step 30 of 90\); finish it with --resume"):
        require_finished(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"finished": True}))
    require_finished(tmp_path)


def test_label_file_finished_marker(pipeline, tmp_path, capsys):
    with h5py.File(pipeline["labels"], "r") as f:
        assert int(f.attrs["finished"]) == 1  # written by explain
    half = tmp_path / "half.h5"
    shutil.copy(pipeline["labels"], half)
    with h5py.File(half, "a") as f:
        f.attrs["finished"] = 0
    fragment = f"{half} is an unfinished label file"
    one_error(capsys, fragment, "pretrain", "--labels", half, "--out", tmp_path / "o", "--epochs", 1, "--quiet")
    one_error(capsys, fragment, "evaluate-labels", "--labels", half, "--quiet")
    one_error(capsys, fragment, "labels", "export", half, "--out", tmp_path / "e", "--quiet")
    one_error(capsys, fragment, "labels", "merge", half, "--out", tmp_path / "m.h5")
    old = tmp_path / "old.h5"  # made before the marker existed: renamed into place complete, accepted
    shutil.copy(pipeline["labels"], old)
    with h5py.File(old, "a") as f:
        del f.attrs["finished"]
    cli("labels", "info", old)


# -- 2. label-file attributes are data -------------------------------------------------------------

def test_label_file_naming_a_module_is_refused_without_importing_it(pipeline, tmp_path, capsys):
    evil = tmp_path / "evil.h5"
    shutil.copy(pipeline["labels"], evil)
    with h5py.File(evil, "a") as f:
        f.attrs["dataset"] = "this:X"
    assert "this" not in sys.modules
    for args in (["pretrain", "--labels", evil, "--out", tmp_path / "o", "--epochs", 1, "--encoder", "resnet18",
                  "--quiet"], ["evaluate-labels", "--labels", evil, "--quiet"]):
        line = one_error(capsys, "attribute dataset='this:X'", *args)
        assert str(evil) in line
        assert "this" not in sys.modules
    assert not (tmp_path / "o").exists()


# -- 3. damaged rows -----------------------------------------------------------------------------

def corrupt(path: Path, key: str, rows) -> None:
    """Flip bytes in the middle of the stored chunk of each row."""
    with h5py.File(path, "r") as f:
        ds = f[key]
        spans = [ds.id.get_chunk_info_by_coord((r, *(0,) * (ds.ndim - 1))) for r in rows]
    data = bytearray(path.read_bytes())
    for info in spans:
        mid = info.byte_offset + info.size // 2
        data[mid:mid + 8] = bytes(b ^ 0xFF for b in data[mid:mid + 8])
    path.write_bytes(bytes(data))


def test_damaged_chunk_is_named_by_row(pipeline, tmp_path, capsys):
    with h5py.File(pipeline["labels"], "r") as f:
        ids = [p.decode() for p in f["paths"][:]]
    one = tmp_path / "one.h5"
    shutil.copy(pipeline["labels"], one)
    corrupt(one, "saliency", [2])
    code, err = cli_exit(capsys, "labels", "info", one)
    assert code == 0, err  # the quick look does not read the rows
    code, err = cli_exit(capsys, "labels", "info", one, "--verify")
    assert code == 2 and err.count("error:") == 1 and f"row 2 ({ids[2]})" in err, err
    one_error(capsys, f"{one} row 2 ({ids[2]}) is unreadable", "labels", "export", one, "--out", tmp_path / "e",
              "--quiet")
    cli("labels", "info", pipeline["labels"], "--verify")  # an intact file passes
    every = tmp_path / "every.h5"
    shutil.copy(pipeline["labels"], every)
    corrupt(every, "images", range(len(ids)))
    line = one_error(capsys, "is unreadable", "pretrain", "--labels", every, "--out", tmp_path / "o", "--encoder",
                     "resnet18", "--epochs", 1, "--batch-size", 8, "--quiet")
    assert re.search(rf"{re.escape(str(every))} row \d+ \(.+\) is unreadable: .+; re-run doll explain for it", line)


# -- 4. one writer per output ----------------------------------------------------------------------

def test_two_overwrite_runs_on_one_out_exactly_one_proceeds(phantom, tmp_path):
    out = tmp_path / "c"
    runs = [doll(*classifier_args(phantom, out, epochs=40), "--overwrite") for _ in range(2)]
    try:
        wait_for(lambda: any(p.poll() is not None for p in runs), what="one run to stop")
        loser = next(p for p in runs if p.poll() is not None)
        winner = next(p for p in runs if p is not loser)
        err = loser.stderr.read()
        assert loser.returncode == 2, err
        assert re.fullmatch(rf"error: {re.escape(str(out))} is in use by process {winner.pid} on \S+; .*\n", err), err
        assert winner.poll() is None  # still running, its folder not deleted under it
        assert out.is_dir()
    finally:
        for p in runs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()


def test_writer_refused_before_the_holder_names_itself_still_names_the_holder(tmp_path):
    # The holder writes its pid a moment after it takes the lock: a writer refused in that
    # moment named "another process" (CI saw it in the two-runs test above).
    from doll.outputs import OutputInUse, lock_file_of, lock_output

    out = tmp_path / "c"
    holder = subprocess.Popen([sys.executable, "-c", "import os, socket, sys, time; from filelock import FileLock; "
                               "lock = FileLock(sys.argv[1], timeout=0); lock.acquire(); print('locked', flush=True); "
                               "time.sleep(0.5); open(sys.argv[1], 'w').write(f'{os.getpid()} {socket.gethostname()}'); "
                               "time.sleep(300)", str(lock_file_of(out))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputInUse, match=rf"is in use by process {holder.pid} on "):
            lock_output(out)
    finally:
        holder.kill()
        holder.wait()


def test_label_file_lock_and_takeover_after_kill(pipeline, tmp_path, capsys):
    out = tmp_path / "l.h5"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from doll.outputs import lock_output; "
                               "lock_output(sys.argv[1]); print('locked', flush=True); time.sleep(300)", str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        explain = ["explain", "--classifiers", pipeline["classifiers"], "--root", pipeline["phantom"], "--out", out,
                   "--overwrite", "--split", "valid", "--steps", 2, "--quiet"]
        one_error(capsys, f"{out} is in use by process {holder.pid} on ", *explain)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    from doll.outputs import lock_file_of, lock_output, release_outputs

    lock_output(out)  # the dead holder's OS lock went with it: taken over, with a note
    assert f"note: {out} was left locked by process {holder.pid} on " in capsys.readouterr().err
    release_outputs()
    assert lock_file_of(out).read_text() == ""  # released cleanly: no holder to report
    lock_output(out)
    assert "note:" not in capsys.readouterr().err
    release_outputs()


def test_a_stage_called_from_python_releases_its_lock_when_it_returns(tmp_path):
    from doll.data.phantom import make_phantoms
    from doll.outputs import _HELD, lock_file_of

    make_phantoms(tmp_path / "ph", n=4, size=32, n_anatomy=0, progress=False)
    assert lock_file_of(tmp_path / "ph").read_text() == "" and not _HELD  # a notebook does not keep it locked


# -- 5. file system errors -------------------------------------------------------------------------

def test_unwritable_out_is_one_error_line(pipeline, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    phantom = pipeline["phantom"]
    cases = [["train-classifiers", "--root", phantom, "--out", blocker / "sub"],
             ["pretrain", "--labels", pipeline["labels"], "--out", blocker / "sub"],
             ["data", "phantom", "--out", blocker / "sub", "--n", 4, "--size", 32],
             ["finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", phantom / "anatomy", "--out", blocker / "sub",
              "--image-size", 32]]
    for args in cases:
        one_error(capsys, f"cannot write {blocker / 'sub'}", *args, "--quiet")
    # permission denied (chmod does not bind root, so the file system is made to say it)
    import pathlib

    real_mkdir = pathlib.Path.mkdir

    def denied(self, *a, **k):
        if "locked_away" in str(self):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", denied)
    one_error(capsys, f"cannot write {tmp_path / 'locked_away' / 'o'}: permission denied", "train-classifiers",
              "--root", phantom, "--out", tmp_path / "locked_away" / "o")
    one_error(capsys, "cannot write", "explain", "--classifiers", pipeline["classifiers"], "--root", phantom,
              "--out", tmp_path / "locked_away" / "l.h5")
    monkeypatch.undo()

    import doll.classification.train as stage

    def read_only(*a, **k):
        raise OSError(30, "Read-only file system", str(tmp_path / "o" / "metrics.json"))

    monkeypatch.setattr(stage, "train_classifiers", read_only)
    one_error(capsys, f"cannot write {tmp_path / 'o' / 'metrics.json'}: read-only file system", "train-classifiers",
              "--root", phantom, "--out", tmp_path / "o")


# -- 6. leftover temporaries -----------------------------------------------------------------------

def test_leftover_temporaries_are_removed_at_the_next_start(pipeline, tmp_path):
    cls = tmp_path / "cls"
    shutil.copytree(pipeline["classifiers"], cls)
    left = [cls / "member_0" / ".last.pt.a1b2c3d4.tmp", cls / "member_1" / ".model.safetensors.zz_9y8x7.tmp",
            cls / ".metrics.json.abcdefgh.tmp"]
    for p in left:
        p.write_bytes(b"half a checkpoint")
    keep = cls / "member_0" / "notes.tmp"  # not a temporary of doll's
    keep.write_text("mine")
    cli("train-classifiers", "--dataset", "phantom", "--root", pipeline["phantom"], "--out", cls, "--members", 2,
        "--epochs", 2, "--image-size", SIZE, "--batch-size", 16, "--resume")
    assert not any(p.exists() for p in left) and keep.exists()
    out = tmp_path / "l.h5"
    parts = Path(str(out) + ".parts")
    parts.mkdir()
    left = [tmp_path / ".l.h5.k3j4h5g6.tmp", tmp_path / ".l.h5.metrics.json.qwertyui.tmp",
            parts / ".block_0000000.npz.asdfghjk.tmp"]
    for p in left:
        p.write_bytes(b"half a file")
    other = tmp_path / ".l2.h5.k3j4h5g6.tmp"  # another output's
    other.write_bytes(b"x")
    cli("explain", "--classifiers", cls, "--root", pipeline["phantom"], "--out", out, "--split", "valid",
        "--steps", 2)
    assert out.is_file() and not any(p.exists() for p in left) and other.exists()


# -- 7. explain --overwrite deletes only label files ----------------------------------------------

def test_explain_overwrite_refuses_a_file_that_is_not_a_label_file(pipeline, tmp_path, capsys):
    for name, make in (("notes.h5", lambda p: p.write_text("my notes")),
                       ("other.h5", lambda p: h5py.File(p, "w").close())):
        target = tmp_path / name
        make(target)
        before = target.read_bytes()
        one_error(capsys, f"{target} is not a doll label file; refusing to replace it", "explain", "--classifiers",
                  pipeline["classifiers"], "--root", pipeline["phantom"], "--out", target, "--overwrite")
        assert target.read_bytes() == before
    labels = tmp_path / "l.h5"  # a label file, but its parts folder holds someone else's files
    shutil.copy(pipeline["labels"], labels)
    Path(str(labels) + ".parts").mkdir()
    (Path(str(labels) + ".parts") / "thesis.tex").write_text("mine")
    one_error(capsys, "holds files that are not an unfinished doll explain run; refusing to delete it", "explain",
              "--classifiers", pipeline["classifiers"], "--root", pipeline["phantom"], "--out", labels, "--overwrite",
              "--quiet")
    assert (Path(str(labels) + ".parts") / "thesis.tex").exists()


# -- 8. OpenCV stays quiet -------------------------------------------------------------------------

def test_truncated_png_gives_only_dolls_error(phantom, tmp_path, capfd):
    root = tmp_path / "anatomy"
    shutil.copytree(phantom / "anatomy", root)
    png = sorted((root / "images").glob("*.png"))[0]
    png.write_bytes(png.read_bytes()[:len(png.read_bytes()) // 2])
    code, err = cli_exit(capfd, "data", "check", "--dataset", "jsrt", "--root", root, "--decode", 0, "--quiet")
    assert code == 2, err
    assert "WARN" not in err and [line for line in err.splitlines() if line.strip()][0].startswith("error: "), err


# -- 9. data check: masks of another size ----------------------------------------------------------

def test_data_check_reports_mask_of_another_size(phantom, tmp_path, capsys):
    import cv2

    root = tmp_path / "ph"
    shutil.copytree(phantom, root)
    mask = sorted((root / "findings" / "masks").rglob("*.png"))[0]
    cv2.imwrite(str(mask), np.zeros((SIZE // 2, SIZE // 2), np.uint8))
    code, err = cli_exit(capsys, "data", "check", "--dataset", "phantom", "--root", root, "--decode", 0, "--quiet")
    out = capsys.readouterr().out
    assert code == 2 and "1 mask(s) whose size is not their image's" in err, err
    from doll.data.check import check_dataset

    report = check_dataset("phantom", str(root), decode=0, progress=False)
    assert report["mask_size_mismatch"] == 1
    assert f"is {SIZE // 2}x{SIZE // 2} but its image" in report["mask_size_examples"][0]
    assert f"is {SIZE}x{SIZE} (0.5x its width, 0.5x its height)" in report["mask_size_examples"][0]
    del out
    anatomy = tmp_path / "anatomy"  # JSRT: SCR's masks at a whole fraction of the image are its layout
    shutil.copytree(phantom / "anatomy", anatomy)
    heart = sorted((anatomy / "masks" / "heart").glob("*.png"))
    cv2.imwrite(str(heart[0]), np.zeros((SIZE // 2, SIZE // 2), np.uint8))
    assert check_dataset("jsrt", str(anatomy), decode=0, progress=False)["ok"]
    cv2.imwrite(str(heart[1]), np.zeros((10, 12), np.uint8))
    report = check_dataset("jsrt", str(anatomy), decode=0, progress=False)
    assert not report["ok"] and report["mask_size_mismatch"] == 1


# -- 10. messages that say the fix -----------------------------------------------------------------

def test_init_messages_say_the_fix(phantom, tmp_path, capsys):
    ft = ["finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", phantom / "anatomy", "--out", tmp_path / "o",
          "--image-size", SIZE, "--quiet"]
    one_error(capsys, "write --init imagenet:/path/to/weights.safetensors", *ft, "--init", "imagenet")
    one_error(capsys, "--init takes random or imagenet:/path/to/weights.safetensors", "train-classifiers", "--root",
              phantom, "--out", tmp_path / "c", "--init", "imagenet")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint\n" * 10)
    for args in (ft, ["train-classifiers", "--root", phantom, "--out", tmp_path / "c", "--quiet"]):
        line = one_error(capsys, "expected a plain state dict of tensors", *args, "--init", f"imagenet:{junk}")
        assert "not a PyTorch file" in line and "Error)" not in line


# -- 11. damaged rows: nothing copied, nothing left ------------------------------------------------

def test_labels_merge_refuses_a_damaged_row(pipeline, tmp_path, capsys):
    with h5py.File(pipeline["labels"], "r") as f:
        ids = [p.decode() for p in f["paths"][:]]
    one = tmp_path / "one.h5"
    shutil.copy(pipeline["labels"], one)
    corrupt(one, "saliency", [2])  # merge copies the stored chunks: it used to copy this one silently
    merged = tmp_path / "m.h5"
    one_error(capsys, f"{one} row 2 ({ids[2]}) is unreadable", "labels", "merge", one, "--out", merged)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["one.h5"]  # nothing left


def test_damaged_rows_leave_no_export_and_no_pretrain_folder(pipeline, tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    shutil.copy(pipeline["labels"], bad)
    corrupt(bad, "images", [5])
    fragment = f"{bad} row 5 ("
    one_error(capsys, fragment, "labels", "export", bad, "--out", tmp_path / "e", "--quiet")
    assert not (tmp_path / "e").exists()
    pretrain = ["pretrain", "--labels", bad, "--encoder", "resnet18", "--epochs", 1, "--batch-size", 8, "--quiet"]
    one_error(capsys, fragment, *pretrain, "--out", tmp_path / "o")
    assert not (tmp_path / "o").exists()
    # an earlier run or export given with --overwrite is kept as it was (refused before it is deleted)
    pre = tmp_path / "pre"
    shutil.copytree(pipeline["pretrain"], pre)
    before = {p.relative_to(pre): p.read_bytes() for p in pre.rglob("*") if p.is_file()}
    one_error(capsys, fragment, *pretrain, "--out", pre, "--overwrite")
    assert {p.relative_to(pre): p.read_bytes() for p in pre.rglob("*") if p.is_file()} == before
    cli("labels", "export", pipeline["labels"], "--out", tmp_path / "e2", "--quiet")
    exported = sorted(p.relative_to(tmp_path / "e2") for p in (tmp_path / "e2").rglob("*"))
    one_error(capsys, fragment, "labels", "export", bad, "--out", tmp_path / "e2", "--overwrite", "--quiet")
    assert sorted(p.relative_to(tmp_path / "e2") for p in (tmp_path / "e2").rglob("*")) == exported


# -- 12. explain warns about a label size that cannot be pretrained on ------------------------------

def test_explain_warns_when_its_size_cannot_be_pretrained_on(pipeline, tmp_path, capsys):
    explain = ["explain", "--classifiers", pipeline["classifiers"], "--root", pipeline["phantom"], "--split", "valid",
               "--steps", 2, "--quiet"]
    code, err = cli_exit(capsys, *explain, "--image-size", 36, "--out", tmp_path / "l36.h5")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ") and "completeness" not in line]
    assert len(warnings) == 1 and "pretrain" in warnings[0] and "multiple of 8" in warnings[0], err
    assert "--image-size 32 or 40" in warnings[0], warnings[0]
    assert (tmp_path / "l36.h5").is_file()  # a warning: the labels are written all the same
    code, err = cli_exit(capsys, *explain, "--image-size", 40, "--out", tmp_path / "l40.h5")
    assert code == 0 and "cannot be pretrained on" not in err, err


# -- 13. arguments checked before the output folder is made ----------------------------------------

def test_train_classifiers_refusals_leave_no_out_folder(phantom, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "c"
    for fragment, args in (("does not exist", ["--root", tmp_path / "nope"]),
                           ("not a phantom data set", ["--root", tmp_path / "empty"]),
                           ("unknown dataset 'cxr'", ["--root", phantom, "--dataset", "cxr"]),
                           ("unknown --uncertain 'bogus'", ["--root", phantom, "--uncertain", "bogus"]),
                           ("--valid-fraction", ["--root", phantom, "--valid-fraction", 1.5]),
                           ("unknown --arch", ["--root", phantom, "--arch", "resnet19"])):
        one_error(capsys, fragment, "train-classifiers", *args, "--out", out, "--members", 1, "--epochs", 1,
                  "--image-size", SIZE, "--quiet")
        assert not out.exists(), args


# -- 14. --resume with --overwrite -------------------------------------------------------------------

def test_resume_with_overwrite_is_refused(pipeline, tmp_path, capsys):
    phantom = pipeline["phantom"]
    for args in (["train-classifiers", "--root", phantom, "--out", tmp_path / "c"],
                 ["explain", "--classifiers", pipeline["classifiers"], "--root", phantom, "--out", tmp_path / "l.h5"],
                 ["pretrain", "--labels", pipeline["labels"], "--out", tmp_path / "p"],
                 ["finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", phantom / "anatomy", "--out",
                  tmp_path / "f", "--image-size", SIZE]):
        one_error(capsys, "--resume and --overwrite", *args, "--resume", "--overwrite", "--quiet")
    assert not any(p for p in tmp_path.iterdir() if not p.name.endswith(".lock"))


# -- 15. an --out holding other files: the fix offered works ------------------------------------------

def test_out_holding_other_files_offers_a_fix_that_works(pipeline, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "letter.txt").write_text("my own file")
    commands = (["train-classifiers", "--root", pipeline["phantom"], "--out", mine, "--quiet"],
                ["pretrain", "--labels", pipeline["labels"], "--out", mine, "--quiet"],
                ["labels", "export", pipeline["labels"], "--out", mine, "--quiet"])
    for args in commands:
        for flag in ((), ("--overwrite",), ("--resume",))[:2 if args[0] == "labels" else 3]:
            line = one_error(capsys, f"{mine} ", *args, *flag)
            assert "choose another --out or empty it" in line and "--overwrite to replace" not in line, line
    assert [p.name for p in mine.iterdir()] == ["letter.txt"]


# -- 16. the kind of a folder is said before whether it finished ---------------------------------------

def test_finetune_init_of_a_classifier_folder_says_what_it_is(pipeline, tmp_path, capsys):
    ft = ["finetune", "--task", "jsrt", "--dataset", "jsrt", "--root", pipeline["phantom"] / "anatomy", "--out",
          tmp_path / "f", "--quiet"]
    cls = pipeline["classifiers"]
    for folder in (cls, cls / "member_0"):
        line = one_error(capsys, f"{folder} is a classifier folder (from doll train-classifiers), not a segmenter",
                         *ft, "--init", folder)
        assert "unfinished" not in line
    one_error(capsys, f"{cls} is a classifier folder", "labels", "refine", pipeline["labels"], "--model", cls,
              "--out", tmp_path / "r.h5")
    assert not (tmp_path / "f").exists() and not (tmp_path / "r.h5").exists()


# -- 17. --init imagenet: with no file ------------------------------------------------------------------

def test_init_imagenet_without_a_file_names_the_form(phantom, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the empty path used to become the current folder: "imagenet:/x is a folder"
    one_error(capsys, "--init imagenet: names no file; write --init imagenet:/path/to/weights.safetensors", "finetune",
              "--task", "jsrt", "--dataset", "jsrt", "--root", phantom / "anatomy", "--out", tmp_path / "o",
              "--image-size", SIZE, "--quiet", "--init", "imagenet:")
    one_error(capsys, "--init takes random or imagenet:/path/to/weights.safetensors", "train-classifiers", "--root",
              phantom, "--out", tmp_path / "c", "--quiet", "--init", "imagenet:")
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()
