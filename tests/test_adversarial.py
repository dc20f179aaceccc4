"""The adversarial table (benchmarks/adversarial.py's cases) in the test suite: every bad
input is answered by one ``error:`` line and exit code 2, every good one succeeds, and the
files checks hold (nothing written, a file untouched, nothing unpickled).

The cases run in-process (``doll_cli.main.main`` with the work folder as the current
directory, stderr captured), which takes the suite's time from minutes of interpreter starts
to seconds; the cases that are not one command (killed or concurrent runs) keep their
subprocesses. ``pytest -m adversarial`` runs only these; they are part of the default run.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.adversarial

_SPEC = importlib.util.spec_from_file_location(
    "doll_adversarial", Path(__file__).resolve().parent.parent / "benchmarks" / "adversarial.py")
adversarial = importlib.util.module_from_spec(_SPEC)
sys.modules["doll_adversarial"] = adversarial
_SPEC.loader.exec_module(adversarial)

CASES = adversarial.cases()


class InProcess(adversarial.Ctx):
    """The table's context, running ``doll ARGS`` in this process."""

    def run(self, args: list[str], timeout: int | None = None) -> dict:
        from doll_cli.main import main

        t0 = time.monotonic()
        out, err = io.StringIO(), io.StringIO()
        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        os.environ.update(self.env)
        os.chdir(self.w)
        rc = 0
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main(list(args))
                except SystemExit as exc:
                    rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
        return {"cmd": "doll " + " ".join(args), "rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(),
                "seconds": round(time.monotonic() - t0, 1)}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    doll = shutil.which("doll", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    work = tmp_path_factory.mktemp("adversarial")
    context = InProcess(work, doll or "doll", 600)
    context.fixture("base")
    return context


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_adversarial_case(ctx, case):
    record = adversarial.run_case(ctx, case)
    assert record["result"] == "pass", f"{record['cmd']}: {record['reason']} | stderr: {record['stderr'][-3:]}"
