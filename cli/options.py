"""Typer commands generated from the settings dataclasses (issue 35: options declared once).

A settings field declared with :func:`doll.utils.option` carries its flag's help, limits,
help panel and CLI type; :func:`settings_command` turns the dataclass into a Typer command
whose options are those fields, in their order, followed by the options every computing
command shares (``--device``, ``--seed``, ``--resume``, ``--overwrite``, ``--quiet``, whose
help is declared once on :class:`doll.utils.RunOptions`). The command builds the settings
and calls the stage: the CLI and ``doll.<stage>(...)`` cannot drift apart. A settings class
that is no :class:`~doll.settings.RunOptions` (a tool such as ``doll labels merge``) keeps
all its fields in their order; a field may be a positional argument (``argument=True``).
"""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Callable

import typer

SHARED = ("device", "seed", "resume", "overwrite", "progress")  # RunOptions' fields, in the CLI's order
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _annotation(field: dataclasses.Field):
    kind = str(field.type).split("|")[0].strip()
    many = kind.startswith(("list[", "tuple["))  # list[str]: an argument taking several values
    if many:
        kind = kind[kind.index("[") + 1:].split(",")[0].rstrip("]").strip()
    single = Path if field.metadata.get("path") else _TYPES.get(kind, str)
    return list[single] if many else single


def _flag_name(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _flag_parameters(field: dataclasses.Field) -> list[inspect.Parameter]:
    """A str field shown as one flag per value (``flags=[(flag, value, help), ...]``): seg4cls's
    ``pseudo`` is ``--pseudo`` or ``--boosted``."""
    meta = field.metadata
    return [inspect.Parameter(_flag_name(flag), inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                              default=typer.Option(False, flag, help=text, **({"rich_help_panel": meta["rich_help_panel"]}
                                                                              if meta.get("rich_help_panel") else {})))
            for flag, value, text in meta["flags"]]


def _parameter(field: dataclasses.Field) -> inspect.Parameter:
    meta = field.metadata
    flag = meta.get("flag") or "--" + field.name.replace("_", "-")
    default = ... if meta.get("required") else meta.get("cli_default", field.default)
    kwargs = {"help": meta["help"]}
    for key in ("min", "max", "rich_help_panel", "metavar"):
        if meta.get(key) is not None:
            kwargs[key] = meta[key]
    if meta.get("path") and default not in (..., None):
        default = Path(default) if default != "" else None
    parameter = typer.Argument(default, **kwargs) if meta.get("argument") else typer.Option(default, flag, **kwargs)
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=parameter, annotation=_annotation(field))


def settings_command(app: typer.Typer, name: str, settings_cls: type, run: Callable, *, doc: str,
                     report: Callable[[dict, object], object], skip: tuple[str, ...] = ()) -> Callable:
    """Register ``doll <name>``: one option per field of ``settings_cls`` declared with
    ``option(...)`` (but ``skip``), then the shared options it has from RunOptions;
    ``run(settings)`` is the stage, ``report(result, settings)`` prints what it returned
    (and what it returns, the command returns)."""
    from doll.settings import RunOptions

    fields = {f.name: f for f in dataclasses.fields(settings_cls)}
    inherited = {f.name for f in dataclasses.fields(RunOptions)} if issubclass(settings_cls, RunOptions) else set()
    own = [f for n, f in fields.items() if n not in inherited and n not in skip
           and (f.metadata.get("help") or f.metadata.get("flags"))]
    shared = [fields[n] for n in SHARED if n in inherited]
    parameters = [p for f in own + shared for p in (_flag_parameters(f) if f.metadata.get("flags") else [_parameter(f)])]

    def command(**given):
        from doll.errors import DollError

        values = {}
        for name, field in fields.items():  # flags standing for the values of one field
            if field.metadata.get("flags"):
                chosen = [value for flag, value, _ in field.metadata["flags"] if given.pop(_flag_name(flag), False)]
                if len(chosen) > 1:
                    raise DollError(field.metadata["conflict"])
                values[name] = chosen[0] if chosen else field.default
        for key, value in given.items():
            field = fields[key]
            if field.metadata.get("invert"):
                value = not value
            if isinstance(value, Path) or (field.metadata.get("path") and value is None):
                value = "" if value is None else str(value)
            elif isinstance(value, (list, tuple)):  # an argument taking several paths
                value = [str(v) if isinstance(v, Path) else v for v in value]
            values[key] = value
        settings = settings_cls(**values)
        return report(run(settings), settings)

    command.__signature__ = inspect.Signature(parameters)
    command.__name__ = name.replace("-", "_")
    command.__doc__ = doc
    return app.command(name)(command)
