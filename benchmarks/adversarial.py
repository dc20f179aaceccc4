"""Adversarial cases through the `doll` CLI: is every bad input answered by one `error:` line
and exit code 2, and does every good one succeed?

A script, not a test (it takes minutes and runs real training on a tiny phantom set). It
builds, in a temporary folder, a phantom data set (40 images of 32 px) and a finished
pipeline on it (classifiers, a label file, a pretrain folder, a fine-tune folder), then
runs each case as a subprocess `doll ...` and records its exit code and stderr. A case
expects either

* ``error``: exit code 2 and exactly one line starting with ``error:`` on stderr, no
  traceback, no OpenCV ``[ WARN``, no other stderr lines (``note:`` / ``warning:`` lines
  are allowed), the line matching the case's pattern (docs/errors.md); or
* ``ok``: exit code 0, no ``error:`` line, no traceback, no OpenCV warning;

plus, for some cases, a check of the files afterwards (nothing written, a file left
untouched, a temporary removed, a payload never unpickled). Issue 27's numbered defects
each have cases (column ``item``).

    python benchmarks/adversarial.py --out adversarial.json
    python benchmarks/adversarial.py --only 'kill|concurrent' --keep   # a subset, keep the folder

Only the standard library here; the few file edits that need numpy / OpenCV / h5py /
torch (doll's own dependencies) run in a `python -c` subprocess of this interpreter.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ZEN = "Beautiful is better than ugly"  # what `import this` prints
SENTINEL = "UNPICKLED"  # a folder the pickle payloads would create if anything unpickled them

TINY_TC = ["--members", "1", "--image-size", "32", "--quiet"]
TC = ["train-classifiers", "--root", "ph", "--epochs", "1", *TINY_TC]
EX = ["explain", "--classifiers", "c", "--root", "ph", "--steps", "2", "--quiet"]
PT = ["pretrain", "--labels", "l.h5", "--encoder", "resnet18", "--max-steps", "2", "--quiet"]
FT = ["finetune", "--root", "ph/anatomy", "--max-steps", "2", "--image-size", "32", "--quiet"]
FT_P = [*FT, "--init", "p"]  # from the pretrain folder
FT_R = [*FT, "--encoder", "resnet18"]  # random init


class FixtureError(Exception):
    pass


@dataclass
class Case:
    name: str
    item: str  # issue 27 item ("1".."12"), or "" for the usual bad input
    args: list[str] | None  # doll's arguments (cwd: the work folder); None with a runner
    expect: str  # "error" (exit 2, one error: line) or "ok" (exit 0)
    must: str = ""  # regex: the error line (expect error) / stderr (expect ok) must match it
    needs: tuple = ()  # fixtures made first
    before: Callable | None = None  # f(ctx): just before the run
    after: Callable | None = None  # f(ctx, result) -> "" or why the case failed
    runner: Callable | None = None  # f(ctx, case) -> result dict (runs that are not one command)
    why: str = ""  # why this expectation, where it is not plain from docs/errors.md


# -- running doll -------------------------------------------------------------------------------

class Ctx:
    def __init__(self, work: Path, doll: str, timeout: int):
        self.w, self.doll, self.timeout = work, doll, timeout
        self.env = dict(os.environ, DOLL_CACHE=str(work / "cache"), NO_COLOR="1", TERM="dumb", COLUMNS="200",
                        PYTHONUNBUFFERED="1")
        self.env.pop("DOLL_DEBUG", None)
        self.built: dict[str, str | None] = {}  # fixture -> None (made) or why it could not be made

    def p(self, rel: str) -> Path:
        return self.w / rel

    def popen(self, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen([self.doll, *args], cwd=self.w, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    def run(self, args: list[str], timeout: int | None = None) -> dict:
        t0 = time.monotonic()
        proc = self.popen(args)
        try:
            out, err = proc.communicate(timeout=timeout or self.timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            rc = "timeout"
        return {"cmd": "doll " + shlex.join(args), "rc": rc, "stdout": out, "stderr": err,
                "seconds": round(time.monotonic() - t0, 1)}

    def must_run(self, args: list[str]) -> None:
        r = self.run(args)
        if r["rc"] != 0:
            raise FixtureError(f"{r['cmd']} exited {r['rc']}: {r['stderr'].strip()[-500:]}")

    def py(self, code: str) -> str:
        """Run Python code (numpy, cv2, h5py, torch available) in the work folder."""
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=self.w, env=self.env,
                           capture_output=True, text=True, timeout=600)
        if r.returncode:
            raise FixtureError(f"helper failed: {r.stderr.strip()[-800:]}")
        return r.stdout

    def fixture(self, name: str) -> None:
        if name not in self.built:
            try:
                FIXTURES[name](self)
                self.built[name] = None
            except FixtureError as exc:
                self.built[name] = str(exc)
            except Exception as exc:  # noqa: BLE001 - a fixture that cannot be made fails its cases
                self.built[name] = f"{type(exc).__name__}: {exc}"
        if self.built[name] is not None:
            raise FixtureError(f"fixture {name}: {self.built[name]}")


# -- fixtures ------------------------------------------------------------------------------------

def fx_base(ctx: Ctx) -> None:
    """The phantom set and a finished pipeline: ph, c, l.h5, p, f (kept in a reused --workdir)."""
    if (ctx.p("f") / "metrics.json").exists():
        return
    ctx.must_run(["data", "phantom", "--out", "ph", "--n", "40", "--size", "32", "--quiet"])
    ctx.must_run([*TC, "--out", "c"])
    ctx.must_run([*EX, "--out", "l.h5"])
    ctx.must_run([*PT, "--out", "p"])
    ctx.must_run([*FT_P, "--out", "f"])


def fx_files(ctx: Ctx) -> None:
    """Plain files and folders: a regular file, an empty folder, a folder of one's own, a
    text file named .h5, an HDF5 file of another tool, junk weights, copies of l.h5."""
    ctx.p("afile").write_text("a regular file\n")
    ctx.p("empty").mkdir(exist_ok=True)
    for k in range(1, 8):  # folders of one's own, one per case
        ctx.p(f"mydocs{k}").mkdir(exist_ok=True)
        ctx.p(f"mydocs{k}/letter.txt").write_text("my own file\n")
    shutil.copytree(ctx.p("c"), ctx.p("cro"), dirs_exist_ok=True)  # a finished run for --resume --overwrite
    ctx.p("notes.h5").write_text("not an HDF5 file: my notes\n")
    ctx.p("empty.h5").write_bytes(b"")
    ctx.p("junk.pth").write_bytes(os.urandom(4096))
    ctx.p("junk.safetensors").write_bytes(os.urandom(4096))
    data = ctx.p("l.h5").read_bytes()
    ctx.p("ltrunc.h5").write_bytes(data[: len(data) // 2])  # an interrupted copy
    ctx.py("""
        import h5py, numpy as np, shutil
        with h5py.File("other.h5", "w") as f:          # an HDF5 file of another tool
            f["x"] = np.arange(10)
        for name, key, value in [("lthis.h5", "dataset", "this:X"),
                                 ("lplugin.h5", "dataset", "doll.data.phantom_reader:Phantom"),
                                 ("lunfinished.h5", "finished", 0),
                                 ("lv99.h5", "format_version", 99),
                                 ("lforeign.h5", "format", "other-tool")]:
            shutil.copy("l.h5", name)
            with h5py.File(name, "a") as f:
                f.attrs[key] = value
        shutil.copy("l.h5", "l2.h5")
    """)


def fx_damaged(ctx: Ctx) -> None:
    """ld.h5: a copy of l.h5 with bytes flipped in the middle of one saliency chunk (row n/2)."""
    out = ctx.py("""
        import h5py, shutil
        shutil.copy("l.h5", "ld.h5")
        with h5py.File("ld.h5", "r") as f:
            d = f["saliency"]
            row = d.shape[0] // 2
            info = d.id.get_chunk_info(row)
            offset, size = info.byte_offset, info.size
        with open("ld.h5", "r+b") as fh:
            fh.seek(offset + size // 2 - 8)
            b = bytearray(fh.read(16))
            fh.seek(offset + size // 2 - 8)
            fh.write(bytes(x ^ 0xFF for x in b))
        print(row)
    """)
    ctx.damaged_row = int(out.strip())


def fx_pickles(ctx: Ctx) -> None:
    """Pickles whose payload would create the folder UNPICKLED if anything unpickled them:
    evil.pth (torch.save zip), evil.pkl (plain pickle), ppickle/ (pretrain folder holding
    model.pt only), cpickle/ (classifier folder whose member holds model.pt only)."""
    ctx.py(f"""
        import os, pickle, shutil, torch
        class Evil:
            def __reduce__(self):
                return (os.mkdir, ({str(ctx.p(SENTINEL))!r},))
        torch.save({{"conv1.weight": Evil()}}, "evil.pth")
        with open("evil.pkl", "wb") as fh:
            pickle.dump({{"conv1.weight": Evil()}}, fh)
        shutil.rmtree("ppickle", ignore_errors=True)
        shutil.rmtree("cpickle", ignore_errors=True)
        shutil.copytree("p", "ppickle")
        os.remove("ppickle/model.safetensors")
        torch.save({{"state": Evil()}}, "ppickle/model.pt")
        shutil.copytree("c", "cpickle")
        os.remove("cpickle/member_0/model.safetensors")
        torch.save({{"state": Evil()}}, "cpickle/member_0/model.pt")
    """)


def _png(ctx: Ctx, code: str) -> None:
    ctx.py("import cv2, numpy as np, shutil, os\n" + textwrap.dedent(code))


def fx_images(ctx: Ctx) -> None:
    """Damaged image sets: anatomy copies (JSRT layout) with a truncated PNG, a half-size
    mask, an odd-size mask; a folder set with a truncated PNG and one with a half-size mask;
    a phantom copy with a truncated JPEG."""
    _png(ctx, """
        def trunc(p):
            b = open(p, "rb").read()
            open(p, "wb").write(b[: len(b) * 2 // 3])
        def resize(p, side):
            m = cv2.imread(p, cv2.IMREAD_UNCHANGED)
            cv2.imwrite(p, cv2.resize(m, (side, side), interpolation=cv2.INTER_NEAREST))
        for name in ("antrunc", "anhalf", "anodd", "fd", "fdhalf", "phtrunc"):
            shutil.rmtree(name, ignore_errors=True)
        for name in ("antrunc", "anhalf", "anodd"):
            shutil.copytree("ph/anatomy", name)
        trunc("antrunc/images/JPCLN003.png")
        resize("anhalf/masks/heart/JPCNN002.png", 16)        # half of the 32 px image
        resize("anodd/masks/heart/JPCNN002.png", 20)         # no whole factor of 32
        for name in ("fd", "fdhalf"):                        # doll.data.folder's layout
            shutil.copytree("ph/anatomy/images", f"{name}/images")
            shutil.copytree("ph/anatomy/masks", f"{name}/masks")
        trunc("fd/images/JPCLN003.png")
        resize("fdhalf/masks/heart/JPCNN002.png", 16)
        shutil.copytree("ph", "phtrunc")
        train = sorted(os.path.join(d, f) for d, _, fs in os.walk("phtrunc/CheXpert-v1.0-phantom/train")
                       for f in fs if f.endswith(".jpg"))
        trunc(train[2])
    """)


def _start_and_kill(ctx: Ctx, args: list[str], wait_for: Callable[[], bool], what: str) -> None:
    proc = ctx.popen(args)
    deadline = time.monotonic() + ctx.timeout
    while not wait_for():
        if proc.poll() is not None:
            raise FixtureError(f"{what}: `doll {shlex.join(args)}` ended (rc {proc.returncode}) before it could "
                               f"be killed: {proc.stderr.read().strip()[-300:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise FixtureError(f"{what}: timed out waiting")
        time.sleep(0.02)
    alive = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    if not alive:
        raise FixtureError(f"{what}: the run finished before kill -9")


KILL_TC = ["train-classifiers", "--root", "ph", "--epochs", "3", "--batch-size", "4", *TINY_TC, "--out", "ck"]
KILL_PT = ["pretrain", "--labels", "l.h5", "--encoder", "resnet18", "--epochs", "3", "--batch-size", "2", "--quiet",
           "--out", "pk"]
KILL_EX = [*EX, "--block", "4", "--out", "kx.h5"]


def fx_killed_classifiers(ctx: Ctx) -> None:
    """ck/: train-classifiers --epochs 3 killed (-9) once member_0/last.pt exists."""
    _start_and_kill(ctx, KILL_TC, lambda: ctx.p("ck/member_0/last.pt").exists(), "killed classifiers")


def fx_killed_pretrain(ctx: Ctx) -> None:
    """pk/: pretrain --epochs 3 killed (-9) once last.pt exists."""
    _start_and_kill(ctx, KILL_PT, lambda: ctx.p("pk/last.pt").exists(), "killed pretrain")


def fx_killed_explain(ctx: Ctx) -> None:
    """kx.h5: explain --block 4 killed (-9) once its first block is written."""
    parts = ctx.p("kx.h5.parts")
    _start_and_kill(ctx, KILL_EX, lambda: parts.is_dir() and any(parts.glob("block_*.npz")), "killed explain")


def fx_sizes(ctx: Ctx) -> None:
    """Nothing: the l7/l31/l36 label files are made by the explain cases themselves."""


FIXTURES = {"base": fx_base, "files": fx_files, "damaged": fx_damaged, "pickles": fx_pickles,
            "images": fx_images, "ck": fx_killed_classifiers, "pk": fx_killed_pretrain, "kx": fx_killed_explain}


# -- checks after a run ---------------------------------------------------------------------------

def absent(*rels: str):
    def check(ctx: Ctx, r: dict) -> str:
        there = [rel for rel in rels if ctx.p(rel).exists()]
        return f"it wrote {', '.join(there)}" if there else ""
    return check


def present(*rels: str):
    def check(ctx: Ctx, r: dict) -> str:
        gone = [rel for rel in rels if not ctx.p(rel).exists()]
        return f"{', '.join(gone)} missing afterwards" if gone else ""
    return check


def unchanged(rel: str, text: str):
    def check(ctx: Ctx, r: dict) -> str:
        p = ctx.p(rel)
        if not p.exists():
            return f"{rel} was deleted"
        if p.is_file() and p.read_text(errors="replace") != text:
            return f"{rel} was changed"
        return ""
    return check


def hdf5_unchanged(rel: str):
    def check(ctx: Ctx, r: dict) -> str:
        return "" if ctx.p(rel).exists() and ctx.p(rel).read_bytes()[:8] == b"\x89HDF\r\n\x1a\n" else f"{rel} was replaced"
    return check


def no_zen(ctx: Ctx, r: dict) -> str:
    return "the Zen of Python was printed: `import this` ran" if ZEN in r["stdout"] + r["stderr"] else ""


def stderr_has(pattern: str):
    def check(ctx: Ctx, r: dict) -> str:
        return "" if re.search(pattern, r["stderr"]) else f"stderr does not say /{pattern}/"
    return check


def not_unpickled(ctx: Ctx, r: dict) -> str:
    return "the pickle payload ran (UNPICKLED/ was created)" if ctx.p(SENTINEL).exists() else ""


def all_of(*checks):
    def check(ctx: Ctx, r: dict) -> str:
        return "; ".join(m for m in (c(ctx, r) for c in checks) if m)
    return check


def requires(*rels: str):
    def before(ctx: Ctx) -> None:
        missing = [rel for rel in rels if not ctx.p(rel).exists()]
        if missing:
            raise FixtureError(f"{', '.join(missing)} not made (an earlier case failed)")
    return before


def plant(*rels: str):
    def before(ctx: Ctx) -> None:
        for rel in rels:
            ctx.p(rel).parent.mkdir(parents=True, exist_ok=True)
            ctx.p(rel).write_bytes(b"half-written" * 1000)
    return before


# -- runs that are not one command -------------------------------------------------------------------

def concurrent(args: list[str], out: str):
    """Two identical `--overwrite` runs started together on one --out."""
    def runner(ctx: Ctx, case: Case) -> dict:
        t0 = time.monotonic()
        procs = [ctx.popen(args) for _ in range(2)]
        res = []
        for proc in procs:
            try:
                o, e = proc.communicate(timeout=ctx.timeout)
                res.append((proc.returncode, o, e))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                o, e = proc.communicate()
                res.append(("timeout", o, e))
        return {"cmd": "2x concurrently: doll " + shlex.join(args), "rc": ",".join(str(r[0]) for r in res),
                "stdout": "".join(r[1] for r in res), "stderr": "".join(f"[run {i + 1}] {r[2]}" for i, r in enumerate(res)),
                "runs": res, "seconds": round(time.monotonic() - t0, 1)}
    return runner


def judge_one_proceeds(ctx: Ctx, case: Case, r: dict) -> str:
    rcs = [x[0] for x in r["runs"]]
    if sorted(map(str, rcs)) != ["0", "2"]:
        return f"exit codes {rcs}: expected one 0 and one 2"
    loser = next(x for x in r["runs"] if x[0] == 2)
    verdict = judge_error(case, loser[2])
    if verdict:
        return "the refused run: " + verdict
    winner = next(x for x in r["runs"] if x[0] == 0)
    return judge_ok(case, winner[2], must="")


def mid_run_overwrite(ctx: Ctx, case: Case) -> dict:
    """pretrain (400 steps) into pm/; once pm/last.pt exists, the same command with --overwrite. The first
    run must outlast the second's start-up (imports, checks: seconds on a loaded CPU), hence 400 steps."""
    args = ["pretrain", "--labels", "l.h5", "--encoder", "resnet18", "--max-steps", "400", "--batch-size", "2",
            "--quiet", "--out", "pm"]
    t0 = time.monotonic()
    first = ctx.popen(args)
    while not ctx.p("pm/last.pt").exists() and first.poll() is None and time.monotonic() - t0 < ctx.timeout:
        time.sleep(0.02)
    running = first.poll() is None
    second = ctx.run([*args, "--overwrite"])
    o, e = first.communicate(timeout=ctx.timeout)
    return {"cmd": f"doll {shlex.join(args)} & (once pm/last.pt exists) doll {shlex.join(args)} --overwrite",
            "rc": f"{first.returncode},{second['rc']}", "stdout": o + second["stdout"],
            "stderr": f"[first] {e}[second] {second['stderr']}", "runs": [(first.returncode, o, e),
                                                                        (second["rc"], second["stdout"], second["stderr"])],
            "first_running": running, "seconds": round(time.monotonic() - t0, 1)}


def judge_mid_run(ctx: Ctx, case: Case, r: dict) -> str:
    if not r["first_running"]:
        return "setup: the first run ended before the second started"
    (rc1, _, e1), (rc2, _, e2) = r["runs"]
    if rc2 != 2:
        return f"the second (--overwrite) run exited {rc2}, expected 2"
    verdict = judge_error(case, e2)
    if verdict:
        return "the second run: " + verdict
    if rc1 != 0:
        return f"the first run exited {rc1}: {e1.strip()[-300:]}"
    m = ctx.p("pm/metrics.json")
    if not m.exists():
        return "pm/metrics.json missing: the running run's folder was disturbed"
    return ""


# -- verdicts ---------------------------------------------------------------------------------------

def _lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]


def judge_error(case: Case, stderr: str, must: str | None = None) -> str:
    lines = _lines(stderr)
    errors = [ln for ln in lines if ln.startswith("error:")]
    problems = []
    if any("Traceback (most recent call last)" in ln for ln in lines):
        problems.append("a traceback on stderr")
    if any("[ WARN" in ln or "[WARN" in ln for ln in lines):
        problems.append("an OpenCV [ WARN line on stderr")
    if len(errors) != 1:
        problems.append(f"{len(errors)} error: lines")
    elif errors[0].startswith("error: internal error"):
        problems.append("an internal error")
    other = [ln for ln in lines if not ln.startswith(("error:", "note:", "warning:"))]
    if other and not problems:
        problems.append(f"{len(other)} other stderr line(s) (first: {other[0][:120]!r})")
    pattern = case.must if must is None else must
    if pattern and len(errors) == 1 and not re.search(pattern, errors[0]):
        problems.append(f"the message does not say /{pattern}/")
    return "; ".join(problems)


def judge_ok(case: Case, stderr: str, must: str | None = None) -> str:
    lines = _lines(stderr)
    problems = []
    if any("Traceback (most recent call last)" in ln for ln in lines):
        problems.append("a traceback on stderr")
    if any("[ WARN" in ln or "[WARN" in ln for ln in lines):
        problems.append("an OpenCV [ WARN line on stderr")
    errors = [ln for ln in lines if ln.startswith("error:")]
    if errors:
        problems.append(f"stderr says {errors[0][:300]!r}")
    pattern = case.must if must is None else must
    if pattern and not re.search(pattern, stderr):
        problems.append(f"stderr does not say /{pattern}/")
    return "; ".join(problems)


JUDGES = {"concurrent": judge_one_proceeds, "mid_run": judge_mid_run}


def run_case(ctx: Ctx, case: Case) -> dict:
    rec = {"name": case.name, "item": case.item, "expect": case.expect, "why_expected": case.why}
    try:
        for fx in ("base", *case.needs):
            ctx.fixture(fx)
        if case.before:
            case.before(ctx)
    except FixtureError as exc:
        shown = "doll " + shlex.join(case.args) if case.args else case.name
        rec.update(cmd=shown, rc=None, stderr=[], one_error_line=False, result="fail", reason=f"setup: {exc}",
                   seconds=0)
        return rec
    out = case.args[case.args.index("--out") + 1] if case.args and "--out" in case.args[:-1] else None
    out_was_there = bool(out) and (ctx.p(out).exists() or ctx.p(out).is_symlink())
    r = case.runner(ctx, case) if case.runner else ctx.run(case.args)
    lines = _lines(r["stderr"])
    rec.update(cmd=r["cmd"], rc=r["rc"], stderr=lines, stdout_tail=r["stdout"].splitlines()[-5:], seconds=r["seconds"],
               one_error_line=(sum(ln.startswith("error:") for ln in lines) == 1
                               and not any("Traceback (most recent" in ln or "[ WARN" in ln for ln in lines)))
    judge = JUDGES.get(case.expect)
    if judge:
        reason = judge(ctx, case, r)
    elif case.expect == "error":
        reason = ("" if r["rc"] == 2 else f"exit code {r['rc']}, expected 2")
        reason = "; ".join(x for x in (reason, judge_error(case, r["stderr"])) if x)
    else:
        reason = ("" if r["rc"] == 0 else f"exit code {r['rc']}, expected 0")
        reason = "; ".join(x for x in (reason, judge_ok(case, r["stderr"])) if x)
    extra = case.after(ctx, r) if case.after else ""
    if case.expect == "error" and out and not out_was_there and ctx.p(out).exists():
        written = sorted(str(q.relative_to(ctx.w)) for q in ctx.p(out).rglob("*")) if ctx.p(out).is_dir() else []
        what = (f" ({', '.join(written[:4])})" if written else
                " (an empty folder)" if ctx.p(out).is_dir() else f" (a file of {ctx.p(out).stat().st_size} bytes)")
        extra = "; ".join(x for x in (f"it wrote {out}{what}",
                                      extra.replace(f"it wrote {out}", "").strip("; ")) if x)
    reason = "; ".join(x for x in (reason, extra) if x)
    rec.update(result="fail" if reason else "pass", reason=reason)
    return rec


# -- the cases ------------------------------------------------------------------------------------------

def cases() -> list[Case]:
    C = []

    def add(name, item, args, *a, **k):
        """``@`` in the arguments: this case's own output name (o<N>, o<N>.h5, ...)."""
        if args:
            args = [f"o{len(C) + 1}{x[1:]}" if x.startswith("@") else x for x in args]
        C.append(Case(name, item, args, *a, **k))

    unfinished = r"unfinished run"
    in_use = r"in use by process \d+"
    cannot_write = r"afile.* is a file, not a folder"

    # 1. killed runs are not taken for finished ones; --resume finishes them
    add("kill: explain on a killed classifier run", "1", [*EX, "--classifiers", "ck", "--out", "lk.h5"], "error",
        must=unfinished + r".*--resume", needs=("ck",), after=absent("lk.h5"))
    add("kill: resume killed classifiers with other settings (takes over the stale lock)", "1,6",
        [*KILL_TC[:4], "4", *KILL_TC[5:], "--resume"], "error", must=r"--resume with different settings",
        needs=("ck",), after=stderr_has(r"note: ck was left locked by process \d+ .*taking it over"),
        why="docs/errors.md: the first command on the output of a killed writer takes its lock over with a note")
    add("kill: resume killed classifiers (leftover .last.pt.*.tmp)", "1,8", [*KILL_TC, "--resume"], "ok",
        needs=("ck",), before=plant("ck/member_0/.last.pt.ab12cd34.tmp"),
        after=all_of(absent("ck/member_0/.last.pt.ab12cd34.tmp"), present("ck/member_0/model.safetensors")),
        why="docs/errors.md: leftover temporaries are deleted at the next start")
    add("kill: explain on the resumed classifier run", "1", [*EX, "--classifiers", "ck", "--out", "lk.h5"], "ok",
        needs=("ck",))
    add("kill: finetune --init a killed pretrain run", "1", [*FT, "--init", "pk", "--out", "fk"], "error",
        must=unfinished, needs=("pk",), after=absent("fk"))
    add("kill: labels refine --model a killed pretrain run", "1", ["labels", "refine", "l.h5", "--model", "pk",
                                                                    "--out", "rk.h5", "--quiet"], "error",
        must=unfinished, needs=("pk",), after=absent("rk.h5"))
    add("kill: resume killed pretrain (stale lock, leftover .last.pt.*.tmp)", "1,6,8", [*KILL_PT, "--resume"], "ok",
        needs=("pk",), before=plant("pk/.last.pt.zz99yy88.tmp"),
        after=all_of(absent("pk/.last.pt.zz99yy88.tmp"), present("pk/model.safetensors"),
                     stderr_has(r"note: pk was left locked by process \d+ .*taking it over")))
    add("kill: finetune --init the resumed pretrain run", "1", [*FT, "--init", "pk", "--out", "fk"], "ok",
        needs=("pk",))
    add("kill: pretrain on a killed explain's label file", "1", [*PT, "--labels", "kx.h5", "--out", "@"], "error",
        must=r"kx\.h5", needs=("kx",))
    add("kill: resume killed explain with other settings", "1", [*KILL_EX[:6], "4", *KILL_EX[7:], "--resume"],
        "error", must=r"--resume with different settings", needs=("kx",))
    add("kill: resume killed explain (leftover .kx.h5.*.tmp)", "1,8", [*KILL_EX, "--resume"], "ok", needs=("kx",),
        before=plant(".kx.h5.ab12cd34.tmp", "kx.h5.parts/.block_0000003.npz.ab12cd34.tmp"),
        after=all_of(absent(".kx.h5.ab12cd34.tmp", "kx.h5.parts/.block_0000003.npz.ab12cd34.tmp"), present("kx.h5")))
    add("kill: a label file whose finished attribute is 0", "1", [*PT, "--labels", "lunfinished.h5", "--out", "@"],
        "error", must=r"unfinished label file", needs=("files",))

    # 2. label-file attributes are data
    add("attrs: pretrain on a label file naming this:X", "2", [*PT, "--labels", "lthis.h5", "--out", "@"], "error",
        must=r"dataset='this:X' is not a built-in data set", needs=("files",), after=no_zen)
    add("attrs: evaluate-labels on a label file naming this:X", "2", ["evaluate-labels", "--labels", "lthis.h5",
                                                                      "--quiet"], "error",
        must=r"not a built-in data set", needs=("files",), after=no_zen)
    add("attrs: labels info on a label file naming this:X", "2", ["labels", "info", "lthis.h5"], "ok",
        needs=("files",), after=no_zen, why="info only reads attributes: nothing to refuse, nothing imported")
    add("attrs: pretrain --dataset phantom on a label file naming this:X", "2",
        [*PT, "--labels", "lthis.h5", "--dataset", "phantom", "--out", "pthis2"], "ok", needs=("files",), after=no_zen,
        why="docs/errors.md: pass the format with --dataset on the command line")
    add("attrs: pretrain on a label file naming a module:Class", "2",
        [*PT, "--labels", "lplugin.h5", "--out", "@"], "error", must=r"not a built-in data set",
        needs=("files",), why="a file never names code, even doll's own class")

    # 3. a damaged chunk
    dmg = r"ld\.h5.*row \d+ \(.*\) is unreadable"
    add("damaged: labels info (attributes only)", "3", ["labels", "info", "ld.h5"], "ok", needs=("damaged",),
        why="without --verify only the attributes are read")
    add("damaged: labels info --verify", "3", ["labels", "info", "ld.h5", "--verify"], "error",
        must=r"ld\.h5: 1 unreadable row", needs=("damaged",))
    add("damaged: labels info --verify on a sound file", "3", ["labels", "info", "l.h5", "--verify"], "ok")
    add("damaged: pretrain --max-steps 2", "3", [*PT, "--labels", "ld.h5", "--out", "@"], "error", must=dmg,
        needs=("damaged",))
    add("damaged: pretrain --epochs 1 (the bad row may fall in the dropped batch)", "3",
        ["pretrain", "--labels", "ld.h5", "--encoder", "resnet18", "--epochs", "1", "--quiet", "--out", "@"], "error",
        must=dmg, needs=("damaged",), why="issue 27 item 3: a damaged file must not pass because its row was not drawn")
    add("damaged: labels export", "3", ["labels", "export", "ld.h5", "--out", "exd", "--quiet"], "error", must=dmg,
        needs=("damaged",))
    add("damaged: labels export --overwrite of the export the damaged file left", "3",
        ["labels", "export", "l.h5", "--out", "exd", "--quiet", "--overwrite"], "ok", needs=("damaged",),
        why="the half-written export is doll's own: --overwrite must replace it (else the user deletes it by hand)")
    add("damaged: evaluate-labels", "3", ["evaluate-labels", "--labels", "ld.h5", "--quiet"], "error", must=dmg,
        needs=("damaged",))
    add("damaged: labels merge", "3", ["labels", "merge", "ld.h5", "--out", "@.h5"], "error", must=dmg,
        needs=("damaged",))

    # 4. image sizes the segmenter cannot take
    for size in (7, 31, 36):
        add(f"size: explain --image-size {size} (warns: cannot be pretrained on)", "4",
            [*EX, "--image-size", str(size), "--out", f"l{size}.h5"], "ok", must=r"(?i)pretrain",
            why="issue 27 item 4: explain warns when its labels' size cannot be pretrained on")
        add(f"size: pretrain on {size} px labels", "4", [*PT, "--labels", f"l{size}.h5", "--out", f"p{size}"], "error",
            must=r"multiple of 8.*use", before=requires(f"l{size}.h5"), after=absent(f"p{size}"))
        add(f"size: finetune --image-size {size}", "4", [*FT, "--init", "p", "--image-size", str(size),
                                                        "--out", f"f{size}"], "error",
            must=r"--image-size %d.*multiple of 8.*use" % size, after=absent(f"f{size}"))
    add("size: finetune --decoder fpn --image-size 40", "4",
        [*FT_R, "--decoder", "fpn", "--image-size", "40", "--out", "@"], "error", must=r"multiple of 32.*use 32 or 64",
        why="smp's U-Net pads any size (it runs at 40 and at 7 px); FPN needs a multiple of 32")

    # 5. a typo, then the corrected command in the same --out
    add("typo: finetune --init pp (a typo)", "5", [*FT, "--init", "pp", "--out", "ft"], "error", must=r"pp",
        after=absent("ft"))
    add("typo: the corrected finetune --init p in the same --out", "5", [*FT, "--init", "p", "--out", "ft"], "ok")
    add("typo: finetune --image-size 31 (a typo)", "5", [*FT, "--init", "p", "--image-size", "31", "--out", "ft2"],
        "error", after=absent("ft2"))
    add("typo: the corrected finetune --image-size 32 in the same --out", "5",
        [*FT, "--init", "p", "--image-size", "32", "--out", "ft2"], "ok")
    add("typo: pretrain --encoder resnet19 (a typo)", "5", [*PT, "--encoder", "resnet19", "--out", "pt3"], "error",
        must=r"resnet19", after=absent("pt3"))
    add("typo: the corrected pretrain --encoder resnet18 in the same --out", "5", [*PT, "--out", "pt3"], "ok")
    add("typo: train-classifiers --init imagenet (bare)", "5,12", [*TC, "--init", "imagenet", "--out", "ct"], "error",
        must=r"imagenet:/path/to/weights", after=absent("ct"))
    add("typo: the corrected train-classifiers in the same --out", "5", [*TC, "--out", "ct"], "ok")

    # 6. one writer per --out
    add("concurrent: two train-classifiers --overwrite on one --out", "6", None, "concurrent", must=in_use,
        runner=concurrent([*TC, "--out", "cc", "--overwrite"], "cc"))
    add("concurrent: two explain --overwrite on one --out", "6", None, "concurrent", must=in_use,
        runner=concurrent([*EX, "--out", "lc.h5", "--overwrite"], "lc.h5"))
    add("concurrent: pretrain --overwrite started mid-run", "6", None, "mid_run", must=in_use,
        runner=mid_run_overwrite)

    # 7. an --out that cannot be written (a path under a regular file)
    add("unwritable: train-classifiers --out afile/sub", "7", [*TC, "--out", "afile/sub"], "error", must=cannot_write,
        needs=("files",))
    add("unwritable: explain --out afile/l.h5", "7", [*EX, "--out", "afile/l.h5"], "error", must=cannot_write,
        needs=("files",))
    add("unwritable: pretrain --out afile/sub", "7", [*PT, "--out", "afile/sub"], "error", must=cannot_write,
        needs=("files",))
    add("unwritable: finetune --out afile/sub", "7", [*FT_P, "--out", "afile/sub"], "error", must=cannot_write,
        needs=("files",))
    add("unwritable: data phantom --out afile/sub", "7", ["data", "phantom", "--out", "afile/sub", "--n", "40",
                                                          "--size", "32", "--quiet"], "error", must=cannot_write,
        needs=("files",))
    add("unwritable: train-classifiers --out a regular file", "7", [*TC, "--out", "afile"], "error", must=r"afile",
        needs=("files",), after=unchanged("afile", "a regular file\n"))
    add("unwritable: labels export --out afile/sub", "7", ["labels", "export", "l.h5", "--out", "afile/sub",
                                                           "--quiet"], "error", must=cannot_write, needs=("files",))
    add("unwritable: labels merge --out afile/m.h5", "7", ["labels", "merge", "l.h5", "--out", "afile/m.h5"], "error",
        must=cannot_write, needs=("files",))
    add("unwritable: labels refine --out afile/r.h5", "7", ["labels", "refine", "l.h5", "--model", "p", "--out",
                                                            "afile/r.h5", "--quiet"], "error", must=cannot_write,
        needs=("files",))
    add("unwritable: evaluate-labels --out afile/sub", "7", ["evaluate-labels", "--labels", "l.h5", "--out",
                                                             "afile/sub", "--quiet"], "error", must=r"afile",
        needs=("files",))
    add("unwritable: show --out afile/x.png", "7", ["show", "--labels", "l.h5", "--out", "afile/x.png"], "error",
        must=r"afile", needs=("files",))

    # 8. leftover temporaries (also in the kill cases above)
    add("temporaries: explain --overwrite onto a label file removes its temporaries only", "8,9",
        [*EX, "--out", "l2.h5", "--overwrite"], "ok", needs=("files",),
        before=plant(".l2.h5.ab12cd34.tmp", ".l2.h5.metrics.json.cd34ef56.tmp", ".mine.ab12cd34.tmp"),
        after=all_of(absent(".l2.h5.ab12cd34.tmp", ".l2.h5.metrics.json.cd34ef56.tmp"), present(".mine.ab12cd34.tmp")),
        why="--overwrite replaces a doll label file; only that output's temporaries go")

    # 9. --overwrite of something that is not doll's
    add("overwrite: explain --overwrite onto a text file", "9", [*EX, "--out", "notes.h5", "--overwrite"], "error",
        must=r"not a doll label file", needs=("files",), after=unchanged("notes.h5", "not an HDF5 file: my notes\n"))
    add("overwrite: explain --overwrite onto another tool's HDF5", "9", [*EX, "--out", "other.h5", "--overwrite"],
        "error", must=r"not a doll label file", needs=("files",), after=hdf5_unchanged("other.h5"))
    add("overwrite: labels merge --overwrite onto a text file", "9", ["labels", "merge", "l.h5", "--out", "notes.h5",
                                                                      "--overwrite"], "error",
        must=r"not a doll label file", needs=("files",), after=unchanged("notes.h5", "not an HDF5 file: my notes\n"))
    add("overwrite: explain --overwrite whose .parts holds other files", "9", [*EX, "--out", "lp.h5", "--overwrite"],
        "error", must=r"lp\.h5\.parts", needs=("files",), before=plant("lp.h5.parts/mine.txt"),
        after=present("lp.h5.parts/mine.txt"))
    for k, (cmd, args) in enumerate((("train-classifiers", TC), ("pretrain", PT), ("finetune", FT_P),
                                     ("labels export", ["labels", "export", "l.h5", "--quiet"])), 1):
        add(f"overwrite: {cmd} --overwrite onto a folder of one's own", "9", [*args, "--out", f"mydocs{k}",
                                                                             "--overwrite"],
            "error", must=f"mydocs{k}", needs=("files",), after=unchanged(f"mydocs{k}/letter.txt", "my own file\n"))
    add("overwrite: data phantom --overwrite onto a folder of one's own", "9",
        ["data", "phantom", "--n", "40", "--size", "32", "--quiet", "--out", "mydocs5", "--overwrite"], "error",
        must="not written by doll", needs=("files",), after=unchanged("mydocs5/letter.txt", "my own file\n"),
        why="issue 33: a folder doll did not write (no .doll-files manifest) is refused by every command, "
            "data phantom included")
    add("out: train-classifiers into a folder of one's own (no --overwrite)", "9",
        [*TC, "--out", "mydocs6"], "error", must=r"^(?!.*--overwrite to replace it)", needs=("files",),
        after=unchanged("mydocs6/letter.txt", "my own file\n"),
        why="the folder holds no run: advising --overwrite sends the user to a command that refuses (case above)")

    # 10. truncated images
    add("truncated: data check, folder set with a truncated PNG", "10", ["data", "check", "--dataset", "folder",
                                                                          "--root", "fd", "--quiet"], "error",
        must=r"unreadable", needs=("images",))
    add("truncated: data check, JSRT layout with a truncated PNG", "10", ["data", "check", "--dataset", "jsrt",
                                                                           "--root", "antrunc", "--quiet"], "error",
        must=r"unreadable", needs=("images",))
    add("truncated: finetune on a JSRT layout with a truncated PNG", "10", [*FT_P[:2], "antrunc", *FT_P[3:], "--out",
                                                                              "ftr"], "error",
        must=r"JPCLN003", needs=("images",))
    add("truncated: finetune --dataset folder with a truncated PNG", "10",
        [*FT_P[:2], "fd", *FT_P[3:], "--dataset", "folder", "--out", "ftr2"], "error", must=r"JPCLN003",
        needs=("images",))
    add("truncated: data check, phantom with a truncated JPEG", "10", ["data", "check", "--dataset", "phantom",
                                                                        "--root", "phtrunc", "--quiet"], "error",
        must=r"unreadable", needs=("images",))
    add("truncated: train-classifiers on a phantom with a truncated JPEG", "10",
        [*TC[:2], "phtrunc", *TC[3:], "--out", "ctr"], "error", must=r"cannot read image", needs=("images",))
    add("truncated: explain on a phantom with a truncated JPEG", "10",
        [*EX[:4], "phtrunc", *EX[5:], "--split", "", "--out", "ltr.h5"], "error", must=r"cannot read image",
        needs=("images",))

    # 11. masks of another size
    add("masks: data check, JSRT layout, one mask half its image's size", "11",
        ["data", "check", "--dataset", "jsrt", "--root", "anhalf", "--quiet"], "ok",
        needs=("images",), why="by design: the JSRT format takes masks at a whole fraction of the image size (SCR's "
                               "masks are 1024 px for 2048 px images; docs/errors.md); other formats refuse it")
    add("masks: data check, JSRT layout, one mask of 20 px for a 32 px image", "11",
        ["data", "check", "--dataset", "jsrt", "--root", "anodd", "--quiet"], "error", must=r"whose size",
        needs=("images",))
    add("masks: data check, folder set, one mask half its image's size", "11",
        ["data", "check", "--dataset", "folder", "--root", "fdhalf", "--quiet"], "error", must=r"whose size",
        needs=("images",))
    add("masks: finetune --strict with a 20 px mask", "11", [*FT_P[:2], "anodd", *FT_P[3:], "--strict", "--out", "@"],
        "error", must=r"--strict", needs=("images",))
    add("masks: data check on the sound sets", "11", ["data", "check", "--dataset", "jsrt", "--root", "ph/anatomy",
                                                      "--quiet"], "ok")

    # 12. --init forms
    add("init: finetune --init imagenet (bare)", "12", [*FT, "--init", "imagenet", "--out", "@"], "error",
        must=r"imagenet:/path/to/weights")
    add("init: finetune --init imagenet:. (a folder)", "12", [*FT, "--init", "imagenet:.", "--out", "@"], "error",
        must=r"not a file|folder|directory")
    add("typo: finetune --init imagenet:nope.pth (a typo)", "5,12", [*FT, "--init", "imagenet:nope.pth", "--out",
                                                                     "ftn"], "error", must=r"no such file",
        after=absent("ftn"))
    add("typo: the corrected finetune (random init) in the same --out", "5", [*FT_R, "--out", "ftn"], "ok")
    add("init: finetune --init imagenet: (no file)", "12", [*FT, "--init", "imagenet:", "--out", "@"], "error",
        must=r"imagenet:/path")
    add("init: finetune --init imagenet:nope.pth", "12", [*FT, "--init", "imagenet:nope.pth", "--out", "@"], "error",
        must=r"no such file")
    add("init: finetune --init imagenet:junk.pth", "12", [*FT, "--init", "imagenet:junk.pth", "--out", "@"], "error",
        must=r"expected a plain state dict.*not a PyTorch file", needs=("files",))
    add("init: finetune --init imagenet:junk.safetensors", "12",
        [*FT, "--init", "imagenet:junk.safetensors", "--out", "@"], "error", must=r"junk\.safetensors",
        needs=("files",))
    add("init: finetune --init imagenet:evil.pth (pickled objects)", "12",
        [*FT, "--init", "imagenet:evil.pth", "--out", "@"], "error", must=r"Python objects", needs=("pickles",),
        after=not_unpickled)
    add("init: finetune --init imagenet:evil.pkl (a plain pickle)", "12",
        [*FT, "--init", "imagenet:evil.pkl", "--out", "@"], "error", must=r"evil\.pkl", needs=("pickles",),
        after=not_unpickled)
    add("init: train-classifiers --init imagenet:evil.pth", "12", [*TC, "--init", "imagenet:evil.pth", "--out", "@"],
        "error", must=r"Python objects", needs=("pickles",), after=not_unpickled)
    add("init: finetune --init a pretrain folder holding model.pt (pickle) only", "12",
        [*FT, "--init", "ppickle", "--out", "@"], "error", must=r"never unpickles", needs=("pickles",),
        after=not_unpickled)
    add("init: explain a classifier folder holding model.pt (pickle) only", "12",
        [*EX, "--classifiers", "cpickle", "--out", "@.h5"], "error", must=r"never unpickles", needs=("pickles",),
        after=not_unpickled)
    add("init: train-classifiers --init imagenet:<a segmenter's weights>", "12",
        [*TC, "--init", "imagenet:p/model.safetensors", "--out", "@"], "error", must=r"missing")

    # the usual: folders of the wrong kind
    add("kind: finetune --init a classifier folder", "", [*FT, "--init", "c", "--out", "@"], "error",
        must=r"classifier|segmenter")
    add("kind: finetune --init a label file", "", [*FT, "--init", "l.h5", "--out", "@"], "error", must=r"l\.h5")
    add("kind: explain --classifiers a pretrain folder", "", [*EX, "--classifiers", "p", "--out", "@.h5"], "error",
        must=r"p")
    add("kind: explain --classifiers a label file", "", [*EX, "--classifiers", "l.h5", "--out", "@.h5"], "error")
    add("kind: pretrain --labels a folder", "", [*PT, "--labels", "c", "--out", "px"], "error", must=r"c")
    add("kind: labels info on a folder", "", ["labels", "info", "c"], "error")
    add("kind: evaluate-labels --labels a folder", "", ["evaluate-labels", "--labels", "c", "--quiet"], "error")
    add("kind: labels refine --model a classifier folder", "", ["labels", "refine", "l.h5", "--model", "c",
                                                                "--out", "@.h5", "--quiet"], "error")
    add("kind: explain --lung-model a pretrain folder", "", [*EX, "--lung-model", "p", "--out", "@.h5"], "error",
        why="a pretrain folder predicts findings, not a lung field")
    add("kind: finetune --init p --decoder unet (p is a PSPNet)", "", [*FT, "--init", "p", "--decoder", "unet", "--out",
                                                                       "fi"], "error", must=r"pspnet|PSPNet")
    add("kind: finetune --init p --encoder resnet50 (p has resnet18)", "", [*FT, "--init", "p", "--encoder", "resnet50",
                                                                            "--out", "@"], "error",
        must=r"resnet18", after=absent("fenc"),
        why="like --decoder: an explicit --encoder that the pretrain folder contradicts is ignored silently otherwise")

    # label files that are not (good) doll label files
    for cmd, args in (("pretrain", [*PT, "--out", "@", "--labels"]), ("labels info", ["labels", "info"]),
                      ("show", ["show", "--out", "@.png", "--labels"])):
        add(f"labelfile: {cmd} on a text file", "", [*args, "notes.h5"], "error", must=r"not an HDF5 file",
            needs=("files",))
    add("labelfile: pretrain on an empty file", "", [*PT, "--labels", "empty.h5", "--out", "@"], "error",
        needs=("files",))
    add("labelfile: labels info on a truncated copy", "", ["labels", "info", "ltrunc.h5"], "error", must=r"ltrunc",
        needs=("files",))
    add("labelfile: pretrain on a truncated copy", "", [*PT, "--labels", "ltrunc.h5", "--out", "@"], "error",
        must=r"ltrunc", needs=("files",))
    add("labelfile: pretrain on another tool's HDF5", "", [*PT, "--labels", "other.h5", "--out", "@"], "error",
        must=r"not a DoLL label file", needs=("files",))
    add("labelfile: pretrain on format version 99", "", [*PT, "--labels", "lv99.h5", "--out", "@"], "error",
        must=r"version 99", needs=("files",))
    add("labelfile: pretrain on format 'other-tool'", "", [*PT, "--labels", "lforeign.h5", "--out", "@"], "error",
        must=r"not a DoLL label file", needs=("files",))
    add("labelfile: pretrain --labels nope.h5", "", [*PT, "--labels", "nope.h5", "--out", "@"], "error",
        must=r"nope\.h5")

    # roots
    add("root: train-classifiers without --root", "", TC[:1] + TC[3:] + ["--out", "@"], "error", must=r"--root")
    add("root: train-classifiers --root nope", "", [*TC[:2], "nope", *TC[3:], "--out", "@"], "error",
        must=r"does not exist")
    add("root: train-classifiers --root an empty folder", "", [*TC[:2], "empty", *TC[3:], "--out", "@"], "error",
        must=r"empty", needs=("files",))
    add("root: train-classifiers --root ''", "", [*TC[:2], "", *TC[3:], "--out", "@"], "error", must=r"--root")
    add("root: explain --root nope", "", [*EX[:4], "nope", *EX[5:], "--out", "lr.h5"], "error", must=r"does not exist")
    add("root: finetune --root nope", "", [*FT_P[:2], "nope", *FT_P[3:], "--out", "@"], "error",
        must=r"does not exist")
    add("root: finetune --root an empty folder", "", [*FT_P[:2], "empty", *FT_P[3:], "--out", "@"], "error",
        needs=("files",))
    add("root: finetune --root a CheXpert-layout folder (not JSRT)", "", [*FT_P[:2], "ph", *FT_P[3:], "--out", "@"],
        "error")
    add("root: data check --root nope", "", ["data", "check", "--dataset", "phantom", "--root", "nope", "--quiet"],
        "error", must=r"does not exist")
    add("root: data check --dataset jsrt --root an empty folder", "", ["data", "check", "--dataset", "jsrt", "--root",
                                                                       "empty", "--quiet"], "error", needs=("files",))

    # numbers
    for args, flag in ((["--epochs", "0"], "--epochs"), (["--epochs", "-1"], "--epochs"),
                       (["--max-steps", "-1"], "--max-steps"), (["--batch-size", "0"], "--batch-size"),
                       (["--batch-size", "-4"], "--batch-size"), (["--members", "0"], "--members"),
                       (["--valid-fraction", "1.5"], "--valid-fraction"), (["--image-size", "0"], "--image-size"),
                       (["--hide", "1.0"], "--hide"), (["--lr", "-1"], "--lr")):
        add(f"number: train-classifiers {' '.join(args)}", "", [*TC, *args, "--out", "@"], "error", must=flag,
            )
    for args, flag in ((["--epochs", "0"], "--epochs"), (["--max-steps", "-1"], "--max-steps"),
                       (["--batch-size", "0"], "--batch-size"), (["--val-fraction", "1.5"], "--val-fraction")):
        add(f"number: pretrain {' '.join(args)}", "", [*PT, *args, "--out", "@"], "error", must=flag,
            )
    for args, flag in ((["--epochs", "-1"], "--epochs"), (["--max-steps", "-1"], "--max-steps"),
                       (["--batch-size", "0"], "--batch-size"), (["--label-fraction", "0"], "--label-fraction"),
                       (["--label-fraction", "1.5"], "--label-fraction"), (["--seeds", "0"], "--seeds"),
                       (["--fold", "3"], "fold")):
        add(f"number: finetune {' '.join(args)}", "", [*FT_P, *args, "--out", "@"], "error", must=flag,
            )
    for args, flag in ((["--steps", "0"], "--steps"), (["--steps", "-2"], "--steps"),
                       (["--batch-size", "-1"], "--batch-size"), (["--block", "0"], "--block"),
                       (["--label-rule", "quantile:2"], "quantile|--label-rule"),
                       (["--label-rule", "bogus"], "--label-rule|bogus"), (["--field-margin", "0.7"], "--field-margin")):
        add(f"number: explain {' '.join(args)}", "", [*EX, *args, "--out", "@.h5"], "error", must=flag,
            )
    add("number: data phantom --size 16", "", ["data", "phantom", "--out", "ph16", "--n", "40", "--size", "16",
                                               "--quiet"], "error", must=r"size", after=absent("ph16"))
    add("number: data phantom --n 0", "", ["data", "phantom", "--out", "ph0", "--n", "0", "--size", "32", "--quiet"],
        "error", must=r"\bn\b", after=absent("ph0"))

    # choices
    for cmd, args, flag in (
            ("finetune", [*FT_R, "--task", "bogus"], "--task"), ("finetune", [*FT_R, "--mode", "bogus"], "--mode"),
            ("finetune", [*FT_R, "--decoder", "bogus"], "--decoder"),
            ("finetune", [*FT_R, "--encoder", "bogus"], "--encoder"),
            ("finetune", [*FT_R, "--dataset", "bogus"], "dataset"),
            ("pretrain", [*PT, "--decoder", "bogus"], "--decoder"), ("pretrain", [*PT, "--encoder", "bogus"], "--encoder"),
            ("explain", [*EX, "--method", "lime"], "--method"), ("explain", [*EX, "--dataset", "cxr"], "dataset"),
            ("explain", [*EX, "--baseline", "bogus"], "--baseline"),
            ("explain", [*EX, "--dataset", "no_such_module:X"], "cannot import"),
            ("train-classifiers", [*TC, "--arch", "resnet19"], "--arch"),
            ("train-classifiers", [*TC, "--dataset", "cxr"], "dataset"),
            ("train-classifiers", [*TC, "--uncertain", "bogus"], "--uncertain"),
            ("train-classifiers", [*TC, "--device", "cuda:99"], "cuda"),
            ("data check", ["data", "check", "--dataset", "bogus", "--root", "ph", "--quiet"], "dataset")):
        add(f"choice: {cmd} {' '.join(args[-2:])}", "", [*args, "--out", "@.h5" if cmd == "explain" else "@"] if cmd != "data check" else args,
            "error", must=flag)

    # an output that holds a run; --resume with other settings
    add("out: train-classifiers into a finished run", "", [*TC, "--out", "c"], "error", must=r"already holds a run")
    add("out: explain onto an existing label file", "", [*EX, "--out", "l.h5"], "error", must=r"l\.h5")
    add("out: pretrain into a finished run", "", [*PT, "--out", "p"], "error", must=r"already holds a run")
    add("out: finetune into a finished run", "", [*FT_P, "--out", "f"], "error", must=r"already holds a run")
    add("out: data phantom into an existing set", "", ["data", "phantom", "--out", "ph", "--n", "40", "--size", "32",
                                                       "--quiet"], "error", must=r"ph")
    add("out: train-classifiers --resume --overwrite", "", [*TC, "--out", "cro", "--resume", "--overwrite"], "error",
        needs=("files",), why="contradictory flags; doll silently takes one of them otherwise",
        must=r"--resume.*--overwrite|--overwrite.*--resume")
    add("resume: train-classifiers --resume --epochs 2", "", [*TC[:4], "2", *TC[5:], "--out", "c", "--resume"], "error",
        must=r"different settings")
    add("resume: pretrain --resume --lr 0.01", "", [*PT, "--lr", "0.01", "--out", "p", "--resume"], "error",
        must=r"different settings")
    add("resume: finetune --resume --label-fraction 0.5", "", [*FT_P, "--label-fraction", "0.5", "--out", "f",
                                                               "--resume"], "error", must=r"different settings")

    # usage
    add("usage: unknown option", "", [*TC, "--bogus", "--out", "@"], "error", must=r"--bogus")
    add("usage: a value after a flag", "", ["train-classifiers", "--root", "ph", "--quiet", "true", "--out", "@"],
        "error", must=r"true")
    add("usage: --out ''", "", [*TC, "--out", ""], "error", must=r"--out")

    # success where success is right (beyond those above)
    add("ok: labels info", "", ["labels", "info", "l.h5"], "ok")
    add("ok: data check phantom", "", ["data", "check", "--dataset", "phantom", "--root", "ph", "--quiet"], "ok")
    add("ok: finetune without --strict resizes a 20 px mask", "11", [*FT_P[:2], "anodd", *FT_P[3:], "--out", "fns"], "ok",
        needs=("images",))
    return C


# -- main ---------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="write the records as JSON to this file")
    ap.add_argument("--only", default="", help="run the cases whose name matches this regex")
    ap.add_argument("--workdir", help="work folder (default: a new temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per doll command")
    ap.add_argument("--doll", default=shutil.which("doll", path=os.path.dirname(sys.executable) + os.pathsep +
                                                       os.environ.get("PATH", "")), help="the doll executable")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    a = ap.parse_args()
    todo = [c for c in cases() if re.search(a.only, c.name)]
    if a.list:
        for c in todo:
            print(f"{c.item or '-':5} {c.expect:10} {c.name}")
        print(f"{len(todo)} cases")
        return 0
    if not a.doll:
        sys.exit("no doll executable found; install doll (pip install -e .) or pass --doll")
    work = Path(a.workdir or tempfile.mkdtemp(prefix="doll-adversarial-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(work, a.doll, a.timeout)
    print(f"work folder {work}; {len(todo)} cases", flush=True)
    t0 = time.monotonic()
    try:
        ctx.fixture("base")
    except FixtureError as exc:
        print(f"cannot build the pipeline: {exc}", file=sys.stderr)
        return 1
    print(f"pipeline built in {time.monotonic() - t0:.0f} s", flush=True)
    records = []
    for i, case in enumerate(todo, 1):
        rec = run_case(ctx, case)
        records.append(rec)
        first = rec["stderr"][-1] if rec["stderr"] else ""
        print(f"{i:3} {rec['result']:4} rc={str(rec['rc']):9} {rec['seconds']:6.1f}s  [{case.item or '-'}] {case.name}"
              + (f"\n        -> {rec['reason']}" if rec["reason"] else "")
              + (f"\n        stderr: {first[:240]}" if rec["result"] == "fail" and first else ""), flush=True)
    right = sum(r["result"] == "pass" for r in records)
    print()
    print(f"{'#':>3}  {'result':6} {'rc':>7} {'1 err':5}  {'item':5} {'expect':10} case")
    for i, r in enumerate(records, 1):
        print(f"{i:3}  {r['result']:6} {str(r['rc']):>7} {'yes' if r['one_error_line'] else 'no':5}  "
              f"{r['item'] or '-':5} {r['expect']:10} {r['name']}")
    print(f"\ncases tried: {len(records)}, right: {right}, wrong: {len(records) - right} "
          f"({time.monotonic() - t0:.0f} s)")
    for r in records:
        if r["result"] == "fail":
            print(f"\nFAIL [{r['item'] or '-'}] {r['name']}\n  $ {r['cmd']}\n  rc {r['rc']}: {r['reason']}")
            for ln in r["stderr"][-6:]:
                print(f"  | {ln[:400]}")
    if a.out:
        Path(a.out).write_text(json.dumps({"cases": len(records), "right": right, "workdir": str(work),
                                           "records": records}, indent=1))
    if not a.keep and not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if right == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
