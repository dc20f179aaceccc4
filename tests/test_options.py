"""Every CLI option agrees with the Python setting it stands for.

The commands keep explicit Typer signatures, so each option is written twice: once as a
field of the stage's settings dataclass (or a parameter of the function the command
calls) and once as a ``typer.Option``. This test walks the whole command tree and fails
on any difference: a default (compared after conversion: a ``Path`` and the same ``str``
agree, and so do a path option's ``None`` and the API's ``""``), a type (``"0"`` is not
``0.0``), required-ness, and a setting with no flag or a flag with no setting, unless
the tables below say why.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing
from pathlib import Path

import pytest
import typer

from doll.errors import DollError

# The Python side of each command: a settings dataclass, or the function it calls when
# there is none ("module:name", imported lazily). Every command must be listed here or
# in NO_SETTINGS.
SETTINGS = {
    "demo": "doll.demonstration:demo",
    "train-classifiers": "doll.classification.train:ClassifierSettings",
    "explain": "doll.explanation.run:ExplainSettings",
    "evaluate-labels": "doll.labels.evaluate:evaluate_labels",
    "show": "doll.report.overlay:show_labels",
    "pretrain": "doll.pretraining.train:PretrainSettings",
    # stage 4 moves to doll/finetuning/ (issue 26, part 2): then "doll.finetuning.settings:FinetuneSettings"
    "finetune": "doll.finetuning.settings:FinetuneSettings",
    "study": "doll.studies.run:StudySettings",
    "predict": "doll.prediction.run:PredictSettings",
    "data phantom": "doll.data.phantom:make_phantoms",
    "data check": "doll.data.check:check_dataset",
    "labels info": "doll.labels.tools:info",
    "labels merge": "doll.labels.tools:merge",
    "labels refine": "doll.labels.tools:refine",
    "labels export": "doll.labels.tools:export",
    "classifiers import": "doll.classification.importer:ImportSettings",
}
NO_SETTINGS: dict[str, str] = {}  # command -> why it has no Python counterpart

# Flags that only shape what the command prints: (command, parameter) -> reason.
CLI_ONLY = {
    ("evaluate-labels", "as_json"): "prints the metrics as JSON instead of a table; the file written is the same",
    ("data check", "as_json"): "prints the report as JSON instead of text; the Python call returns the dict",
    ("predict", "more_inputs"): "paths after --input's first (a shell glob: --input scans/*.dcm) join --input; "
                                "the Python call takes them all in inputs=[...]",
}
# Settings with no flag, on purpose: (command, field) -> reason.
API_ONLY = {
    ("demo", "overwrite"): "the command always replaces an earlier demo in --out (and refuses any other folder); "
                           "Python callers may pass overwrite=False to keep one",
}
# Options that reach their setting through a conversion: (command, field) -> (the CLI
# parameters, the conversion the command applies to their values).
DERIVED = {
    ("finetune", "pseudo"): (("pseudo", "boosted"),
                             lambda pseudo, boosted: "boosted" if boosted else "pseudo" if pseudo else "none"),
}
# Parameters that are named differently on the two sides: (command, CLI name) -> API name.
RENAMED = {(command, "quiet"): "progress" for command in SETTINGS}  # --quiet is progress=False
# Known differences in code this change does not own, each to be removed with its fix:
# (command, problem text) -> who fixes it.
PENDING = {
    ("data phantom", "overwrite: the CLI defaults to False, the API to True"):
        "doll/data/phantom.py: make_phantoms replaces an earlier set unless told not to, the command refuses "
        "one; the demo relies on replacing (it reruns into its own folder), so the fix is overwrite=False in "
        "make_phantoms and overwrite=True in doll/demonstration.py's call",
}


def _load(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _commands():
    from doll_cli.main import _register, app

    _register()

    def walk(command, path):
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            yield " ".join(path), command
            return
        for name, sub in subcommands.items():
            yield from walk(sub, (*path, name))

    return dict(walk(typer.main.get_command(app), ()))


COMMANDS = _commands()


def test_every_command_is_checked():
    unlisted = sorted(set(COMMANDS) - set(SETTINGS) - set(NO_SETTINGS))
    assert not unlisted, f"commands with no entry in SETTINGS (or NO_SETTINGS, with a reason): {unlisted}"
    gone = sorted((set(SETTINGS) | set(NO_SETTINGS)) - set(COMMANDS))
    assert not gone, f"entries for commands that no longer exist: {gone}"


@dataclasses.dataclass
class Setting:
    name: str
    annotation: object  # a type, or None when the API does not say
    default: object  # inspect.Parameter.empty: required


def _api_settings(target) -> dict[str, Setting]:
    """The settings of a dataclass or the keyword parameters of a function, by name."""
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - an annotation Python cannot evaluate here: types unknown
        hints = {}
    empty = inspect.Parameter.empty
    if dataclasses.is_dataclass(target):
        out = {}
        for f in dataclasses.fields(target):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else empty)
            out[f.name] = Setting(f.name, hints.get(f.name), default)
        return out
    return {p.name: Setting(p.name, hints.get(p.name), p.default)
            for p in inspect.signature(target).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "settings"}


def _cli_annotation(param):
    descriptor = getattr(param, "type_descriptor", None)  # typer >= 0.2x (vendored click)
    if descriptor is not None:
        return descriptor.annotation
    names = {"INT": int, "IntRange": int, "FLOAT": float, "FloatRange": float, "STRING": str, "BOOL": bool,
             "Path": Path, "Choice": str}
    kind = names.get(getattr(param.type, "name", "").upper()) or names.get(type(param.type).__name__)
    return list[kind] if param.nargs == -1 or getattr(param, "multiple", False) else kind


def _plain(annotation):
    """The types an annotation allows, with Path read as str: ``float | str`` -> {float, str}."""
    if annotation is None:
        return None
    if annotation is Path:
        return {str}
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        return set().union(*(_plain(a) for a in typing.get_args(annotation) if a is not type(None)))
    if origin is not None:
        return {(origin, tuple(frozenset(_plain(a)) for a in typing.get_args(annotation)))}
    return {annotation}


def _names(types) -> str:
    return " | ".join(sorted(getattr(t, "__name__", str(t)) for t in types))


def _value(value):
    """A default as the API sees it: a Path is its str; an absent path option (None) is ""."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    return value


def _same(cli_default, api_default) -> bool:
    a, b = _value(cli_default), _value(api_default)
    if a is None and b == "" or a == "" and b is None:
        return True
    return type(a) is type(b) and a == b


def _problems(command_name: str, command) -> list[str]:
    target = _load(SETTINGS[command_name])
    api = _api_settings(target)
    problems = []
    used = set()
    for (cmd, field), (sources, convert) in DERIVED.items():
        if cmd != command_name:
            continue
        params = {p.name: p for p in command.params}
        missing = [s for s in sources if s not in params]
        if missing or field not in api:
            problems.append(f"{field}: DERIVED names options or a setting that do not exist ({missing or field})")
            continue
        value = convert(*(params[s].default for s in sources))
        if not _same(value, api[field].default):
            problems.append(f"{field}: the CLI's defaults give {value!r}, the API's default is {api[field].default!r}")
        used.add(field)
        used.update(sources)
    for param in command.params:
        if param.name in used or param.name == "help":
            continue
        name = RENAMED.get((command_name, param.name), param.name)
        if (command_name, param.name) in CLI_ONLY:
            continue
        if name not in api:
            problems.append(f"{param.name}: a CLI option with no setting in {SETTINGS[command_name]}")
            continue
        used.add(name)
        setting = api[name]
        cli_default = param.default
        if name == "progress":  # --quiet
            cli_default = None if cli_default is None else not cli_default
        api_required = setting.default is inspect.Parameter.empty
        if param.required and not api_required:
            if setting.default in ("", None):
                problems.extend(_refusal_problems(target, name, param))
            else:
                problems.append(f"{name}: required on the CLI, but the API defaults to {setting.default!r}")
        elif api_required and not param.required:
            problems.append(f"{name}: required in the API, but the CLI defaults to {cli_default!r}")
        elif not param.required and not _same(cli_default, setting.default):
            problems.append(f"{name}: the CLI defaults to {_value(cli_default)!r}, the API to {setting.default!r}")
        cli_types, api_types = _plain(_cli_annotation(param)), _plain(setting.annotation)
        if api_types is None and setting.default not in (None, inspect.Parameter.empty):
            api_types = {type(setting.default)}  # an unannotated parameter: the type of its default
        if name == "progress":
            cli_types = {bool}
        if cli_types and api_types and not cli_types <= api_types:
            problems.append(f"{name}: the CLI takes {_names(cli_types)}, the API {_names(api_types)}")
    for name in sorted(set(api) - used):
        if (command_name, name) not in API_ONLY:
            problems.append(f"{name}: a setting with no flag (add one, or list it in API_ONLY with a reason)")
    return problems


def _refusal_problems(target, name: str, param) -> list[str]:
    """A CLI-required option whose API default is empty is fine when the API refuses the
    empty value: constructing the settings with it raises a DollError naming the flag."""
    flag = param.opts[0] if param.opts else name
    if not dataclasses.is_dataclass(target):
        return [f"{name}: required on the CLI, but the API defaults to {_api_settings(target)[name].default!r}"]
    others = {other: "placeholder" for other, s in _api_settings(target).items()
              if other != name and (s.default is inspect.Parameter.empty or s.default == "")
              and _plain(s.annotation) == {str}}  # only the field under test is empty
    try:
        target(**others, **{name: ""})
    except TypeError as exc:
        return [f"{name}: cannot construct {target.__name__} to see whether it refuses {name}='': {exc}"]
    except DollError as exc:
        if flag in str(exc):
            return []
        return [f"{name}: the API refuses an empty value, but its message does not name {flag}: {exc}"]
    return [f"{name}: required on the CLI, but {target.__name__}({name}='') is accepted"]


@pytest.mark.parametrize("command_name", sorted(SETTINGS))
def test_cli_options_match_python_settings(command_name):
    if command_name not in COMMANDS:
        pytest.fail(f"{command_name} is in SETTINGS but is not a command")
    problems = _problems(command_name, COMMANDS[command_name])
    pending = {p for (c, p) in PENDING if c == command_name}
    stale = pending - set(problems)
    assert not stale, f"fixed, so remove from PENDING: {sorted(stale)}"
    left = [p for p in problems if p not in pending]
    assert not left, f"`doll {command_name}` and {SETTINGS[command_name]} disagree:\n" + "\n".join(left)


def test_allow_lists_name_real_parameters():
    for table in (CLI_ONLY, API_ONLY):
        for command_name, name in table:
            assert command_name in SETTINGS, (command_name, name)
            cli = {p.name for p in COMMANDS[command_name].params}
            assert name in cli or name in _api_settings(_load(SETTINGS[command_name])), (command_name, name)


HELP_PAGES = sorted({" ".join(name.split()[:i]) for name in COMMANDS for i in range(len(name.split()) + 1)})


@pytest.mark.parametrize("page", HELP_PAGES, ids=lambda page: page or "doll")
def test_help_shows_flags_as_flags(page, capsys):
    """No ``<bool>`` after a flag (as if ``--quiet`` took a value); options with a value keep their type."""
    from doll_cli.main import main

    try:
        main([*page.split(), "--help"])
    except SystemExit as exc:
        assert not exc.code, exc.code
    text = capsys.readouterr().out
    assert "--help" in text and "<bool>" not in text, text
    if page in COMMANDS and any(not getattr(p, "is_flag", True) for p in COMMANDS[page].params):
        assert "<" in text, text  # e.g. <path>, <int>: only the flags lost their type
