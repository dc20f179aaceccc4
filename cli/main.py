"""The ``doll`` command: a thin Typer layer that parses options and calls the library.

Exit codes: 0 success; 2 bad usage or bad input (one line ``error: ...`` on stderr, no
traceback unless ``--debug``); 1 an internal error; 130 interrupted.
"""
from __future__ import annotations

import importlib
import json
import os
import sys

import typer

from doll.errors import DollError


class _FlagsReadAsFlags:
    """typer's rich help prints each option's type after it, and ``<bool>`` after a flag too,
    as if ``--quiet`` took a value. A flag gets an empty metavar, so nothing is printed
    after it; options with a value keep their ``<int>``, ``<path>``, ..."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
            if getattr(param, "nargs", 1) != 1 and hasattr(param, "display_type_rich"):  # <list[Path]> -> <path>...
                shown = param.display_type_rich

                def display(ctx=None, shown=shown):
                    text = shown(ctx=ctx)
                    return text.replace("<list[Path]>", "<path>...") if isinstance(text, str) else text

                param.display_type_rich = display
        return params


class _Command(_FlagsReadAsFlags, typer.core.TyperCommand):
    pass


class _Group(_FlagsReadAsFlags, typer.core.TyperGroup):
    pass


class Typer(typer.Typer):
    """The ``typer.Typer`` of doll's command and its groups (``doll data``, ``doll labels``):
    every command made with it shows flags as flags."""

    def __init__(self, **kwargs):
        super().__init__(cls=_Group, **kwargs)

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or _Command, **kwargs)


app = Typer(
    name="doll",
    help="DoLL: turn image-level chest X-ray labels into pixel-level pseudo labels, pretrain a "
         "segmenter on them and fine-tune it on small real tasks. Start with `doll demo --quick`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Options shared by all commands, so users learn them once.
DEVICE = typer.Option("auto", "--device", help="auto (GPU if present), cpu, cuda or cuda:N.")
SEED = typer.Option(0, "--seed", help="Random seed: the same seed gives the same result on the same machine.")
QUIET = typer.Option(False, "--quiet", help="No progress bars.")
RESUME = typer.Option(False, "--resume", help="Continue an interrupted run in --out from where it stopped.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace a previous run in --out.")


def emit(result: dict, as_json: bool = False, keys: tuple[str, ...] = (), footer: str = "") -> None:
    """Print a command's result: the chosen keys (or all of it as JSON). Only rank 0 under torchrun."""
    if os.environ.get("RANK", "0") != "0":
        return
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    shown = {k: result[k] for k in keys if k in result} if keys else result
    def fmt(v):
        if isinstance(v, float):
            return round(v, 4)
        return {k: fmt(x) for k, x in v.items()} if isinstance(v, dict) else v

    for k, v in shown.items():
        typer.echo(f"{k}: {fmt(v)}")
    if footer:
        typer.echo(footer)


def _version(value: bool) -> None:
    if value:
        import torch

        from doll import __version__

        typer.echo(f"doll {__version__} (torch {torch.__version__}, cuda available: {torch.cuda.is_available()})")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print doll's, torch's version and whether CUDA is usable, then exit.")):
    pass  # options of `doll` itself; the help text is the app's


def _register() -> None:
    # registration order is the order `doll --help` lists the commands in: the demo, then
    # the stages in the order they run, then the tools. Once per process: main() runs many
    # times in one process in the tests, and each add_typer would add the groups again.
    if app.registered_groups:
        return
    modules = {name: importlib.import_module(f"doll_cli.{name}")
               for name in ("demo", "classify", "explain", "pretrain", "finetune", "study", "predict", "data", "classifiers")}
    app.add_typer(modules["data"].data_app, name="data")
    app.add_typer(modules["explain"].labels_app, name="labels")
    app.add_typer(modules["classifiers"].classifiers_app, name="classifiers")


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    sys.exit(code)


RESUMABLE = ("train-classifiers", "explain", "pretrain", "finetune", "study")  # the commands with --resume


def _interrupted(argv: list[str]) -> str:
    command = next((a for a in argv if not a.startswith("-")), "")
    if command in RESUMABLE:
        return "interrupted; rerun with --resume to continue where it stopped"
    return "interrupted"


PATH_FLAGS = ("--out", "--root", "--labels", "--classifiers", "--model", "--init", "--lung-model", "--input")


def _empty_path_flag(argv: list[str]) -> str | None:
    """An empty path (``--out ""``) would mean the current folder: refuse it."""
    for i, a in enumerate(argv):
        flag, eq, value = a.partition("=")
        if flag in PATH_FLAGS and ((eq and not value.strip()) or (not eq and i + 1 < len(argv) and not argv[i + 1].strip())):
            return flag
    return None


def _run(argv: list[str]):
    """Run one command; the output locks it took are released when it ends, however it ends
    (in-process callers, the tests among them, run many commands in one process)."""
    try:
        return app(args=argv, prog_name="doll", standalone_mode=False)
    finally:
        if "doll.outputs" in sys.modules:
            sys.modules["doll.outputs"].release_outputs()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("DOLL_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    empty = _empty_path_flag(argv)
    if empty:
        _fail(f"{empty} is empty; name a file or folder", 2)
    _register()
    try:
        code = _run(argv)
    except DollError as exc:
        if debug:  # the traceback, and still the exit code of bad input
            import traceback

            traceback.print_exc()
        _fail(str(exc).splitlines()[0], 2)
    except KeyboardInterrupt:
        _fail(_interrupted(argv), 130)
    except Exception as exc:  # noqa: BLE001 - click's exceptions (vendored by newer typer), then the rest
        kinds = {c.__name__ for c in type(exc).__mro__}
        if "NoArgsIsHelpError" in kinds:  # `doll` or `doll data` alone: the help was shown
            sys.exit(0)
        if "UsageError" in kinds:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx else ""
            _fail(f"{exc.format_message()}{hint}", 2)
        if "Exit" in kinds:
            sys.exit(getattr(exc, "exit_code", 0))
        if "Abort" in kinds:
            _fail(_interrupted(argv), 130)
        if debug:
            raise
        if "OutOfMemoryError" in kinds or "out of memory" in str(exc).lower():
            _fail("out of GPU memory; run again with half the --batch-size (and --resume)", 2)
        if (isinstance(exc, OSError) and exc.errno == 28) or "No space left on device" in str(exc):
            # OSError from Python, or a library's own error wrapping it (safetensors' SafetensorError)
            _fail(f"disk full ({getattr(exc, 'filename', None) or 'while writing'}); free space or choose another --out", 2)
        if isinstance(exc, OSError):  # permission, read-only file system, quota, a file in the way
            from doll.outputs import os_error_message

            message = os_error_message(exc)
            if message:
                _fail(message, 2)
        _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback and report it)", 1)
    if not code and "torch" in sys.modules:  # success: every rank leaves torchrun's process group together
        from doll.train.distributed import shutdown  # (no torch loaded, no group: `doll --help` stays fast)

        shutdown()
    # Outside standalone mode, typer (0.29 here) returns the code of a `typer.Exit`
    # instead of raising it, and turns Ctrl-C into Exit(130): pass them on as exit codes.
    if code == 130:
        _fail(_interrupted(argv), 130)
    if isinstance(code, int) and not isinstance(code, bool) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
