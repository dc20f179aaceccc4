"""Help and defaults (issue 34, item 7): one consistent set. On e313c11: --split val was
refused on a data set whose folder is Val, evaluate-labels --out x.json made a folder
x.json/, data phantom --size defaulted to 128 where everything else says 64, finetune's
--epochs and --max-steps were each defined by the other, positional arguments rendered as
<list[Path]>, and seg4cls/mixed-only flags were mixed with the rest."""
from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from conftest import cli_exit


def _help(*args: str) -> str:
    from doll_cli.main import app

    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return re.sub(r"\s+", " ", result.output)


@pytest.mark.parametrize("given", ["val", "Val", "validation", "VALID"])
def test_split_names_accept_the_data_sets_own_spelling(phantom, given):
    from doll.data.registry import open_dataset

    fmt = open_dataset("phantom", str(phantom))
    assert fmt.items(given) == fmt.items("valid")


def test_evaluate_labels_out_naming_a_json_file_writes_that_file(pipeline, tmp_path, capsys):
    target = tmp_path / "quality.json"
    code, err = cli_exit(capsys, "evaluate-labels", "--labels", pipeline["labels"], "--out", target, "--quiet")
    assert code == 0, err
    assert target.is_file() and json.loads(target.read_text())["command"] == "evaluate-labels"


def test_help_is_consistent():
    phantom = _help("data", "phantom")
    assert "[default: 64]" in phantom.split("--size")[1][:200]
    finetune = _help("finetune")
    epochs, steps = finetune.split("--epochs")[1][:300], finetune.split("--max-steps")[1][:300]
    assert "0: --max-steps" not in epochs and "--epochs' worth)" not in steps  # neither defined by the other alone
    assert "Only for --task seg4cls or mixed" in finetune
    assert "list[Path]" not in _help("labels", "merge") and "LABELS.h5" in _help("labels", "merge")
