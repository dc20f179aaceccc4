"""``doll show``'s settings: each field is also its CLI option (declared once,
:func:`doll.settings.option`). No torch here: the CLI builds its command from this class.
They only carry the values to :func:`doll.report.overlay.show_labels`, which checks them."""
from __future__ import annotations

from dataclasses import dataclass

from doll.labels.settings import label_rule_option, labels_option
from doll.settings import option, run_option


@dataclass(kw_only=True)
class ShowSettings:
    labels: str = labels_option()
    index: int = option(0, "Row of the file to show.", min=0)
    out: str = option("", "PNG file to write.", required=True, path=True)
    classes: str = option("", "Comma-separated classes (default: those explained for the image).")
    label_rule: str = label_rule_option()
    overwrite: bool = run_option("overwrite")
