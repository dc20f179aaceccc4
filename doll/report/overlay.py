"""Overlays: an image with coloured label contours and saliency, several classes side by side."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from doll.errors import DollError
from doll.utils import atomic_path

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
           (170, 110, 40), (255, 250, 200)]


def overlay(image: np.ndarray, masks: list[np.ndarray], names: list[str], heat: list[np.ndarray] | None = None,
            scale: int = 4) -> np.ndarray:
    """RGB panel: the image with contours of each mask; with ``heat``, one heat-map panel per class."""
    s = image.shape[0] * scale
    base = cv2.cvtColor(cv2.resize(image, (s, s), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2RGB)
    panels = []
    left = base.copy()
    for k, m in enumerate(masks):
        m = cv2.resize(m.astype(np.uint8), (s, s), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(left, contours, -1, PALETTE[k % len(PALETTE)], max(1, scale // 2))
    panels.append(left)
    for k, h in enumerate(heat or []):
        h = cv2.resize(h.astype(np.uint8), (s, s), interpolation=cv2.INTER_LINEAR)
        colour = cv2.cvtColor(cv2.applyColorMap(h, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        panel = (0.55 * base + 0.45 * colour).astype(np.uint8)
        cv2.putText(panel, names[k][:18], (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, PALETTE[k % len(PALETTE)], 1)
        panels.append(panel)
    return np.concatenate(panels, axis=1)


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DollError(f"--out {path} should end in .png")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def show_labels(labels: str, index: int = 0, *, out: str, classes: str = "", label_rule: str = "",
                overwrite: bool = False) -> dict:
    """``doll show``: overlay of one row of a label file (explained classes, or those named).
    An existing ``out`` is replaced only with ``overwrite``."""
    from doll.utils import prepare_out_file

    from doll.labels.rule import apply_rule
    from doll.labels.store import LabelFile

    if Path(out).is_dir():
        raise DollError(f"--out {out} is a folder; name a file to write")
    if Path(out).suffix.lower() != ".png":
        raise DollError(f"--out {out} should end in .png")
    prepare_out_file(out, overwrite=overwrite, what="picture", inputs={"--labels": labels})
    with LabelFile(labels) as lf:
        if not 0 <= index < len(lf):
            raise DollError(f"--index {index} is outside the file's {len(lf)} rows")
        names = lf.classes
        wanted = [c.strip() for c in classes.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in names]
        if unknown:
            raise DollError(f"--classes names unknown class(es) {', '.join(unknown)}; known: {', '.join(names)}")
        ks = [names.index(c) for c in wanted if c in names] if wanted else np.flatnonzero(lf["targets"][index]).tolist()
        image = lf["images"][index]
        sal = lf["saliency"][index]
        rule = label_rule or lf.label_rule
        masks = [apply_rule(sal[k], rule) for k in ks]
        write_png(out, overlay(image, masks, [names[k] for k in ks], [sal[k] for k in ks]))
        return {"command": "show", "index": index, "path": lf.paths()[index], "classes": [names[k] for k in ks],
                "out": str(out)}
