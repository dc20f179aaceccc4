"""Paired comparison of two arms from two study outputs (or one): a reader of their JSON.

``doll study`` pairs the inits of one study against its reference (study.json's
``comparisons``). Comparisons across studies (U-Net against PSPNet, encoder-only against
whole-network transfer) pair the cells that share mode, label fraction and seed: the seed
draws the mask subset, so such cells trained on the same masks. OUT is a ``doll study``
folder (study.json) or one that ``label_efficiency.py`` wrote before it ran doll study
(label_efficiency.json, e.g. docs/results/le_*). Prints one markdown row per (mode,
fraction): both arms' final metric (mean ± sd over seeds), the paired difference B − A and
its 95 % t-interval over seeds (``doll.studies.stats``); ``--json`` prints the rows as JSON.

    python benchmarks/compare_arms.py le_phantom:random le_phantom_unet:random
    python benchmarks/compare_arms.py le_covid:random le_covid:doll --metric negatives_false_positive_area
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from doll.studies import stats

FILES = ("study.json", "label_efficiency.json")  # doll study's, the old script's


def cells(spec: str, metric: str) -> tuple[str, dict]:
    """``OUT:ARM`` -> (label, {(mode, fraction, seed): metric})."""
    out, sep, arm = spec.rpartition(":")
    if not sep or not out or not arm:
        raise SystemExit(f"compare_arms: expected OUT:ARM (a study's --out folder and an init's name), got {spec!r}")
    path = next((Path(out) / f for f in FILES if (Path(out) / f).is_file()), None)
    if path is None:
        raise SystemExit(f"compare_arms: {out} holds neither {' nor '.join(FILES)}; run `doll study --out {out}`")
    doc = json.loads(path.read_text())
    found = {(c["mode"], float(c["fraction"]), int(c["seed"])): c[metric] for c in doc.get("cells", [])
             if c.get("init") == arm and c.get(metric) is not None}
    if not found:
        arms = sorted({c.get("init") for c in doc.get("cells", [])})
        raise SystemExit(f"compare_arms: no finished cell of arm {arm!r} with {metric} in {path} (arms: {arms})")
    settings = doc.get("settings", {})
    label = f"{Path(out).name}:{arm} ({settings.get('decoder', '?')}, transfer {settings.get('transfer', 'all')})"
    return label, found


def compare(a: dict, b: dict) -> list[dict]:
    rows = []
    for mode, frac in sorted({(m, f) for m, f, _ in a.keys() & b.keys()}):
        seeds = sorted(s for m, f, s in a.keys() & b.keys() if (m, f) == (mode, frac))
        va, vb = [a[mode, frac, s] for s in seeds], [b[mode, frac, s] for s in seeds]
        rows.append({"mode": mode, "fraction": frac, "seeds": seeds, "a": stats.mean_sd(va), "b": stats.mean_sd(vb),
                     "diff": stats.t_interval([y - x for x, y in zip(va, vb)])})
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="OUT:ARM, the reference arm")
    p.add_argument("b", help="OUT:ARM, the arm compared with it (the difference is B - A)")
    p.add_argument("--metric", default="mean_iou", help="a per-cell number of the JSON (default mean_iou)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    (la, ca), (lb, cb) = cells(a.a, a.metric), cells(a.b, a.metric)
    rows = compare(ca, cb)
    if not rows:
        raise SystemExit("compare_arms: the two arms share no (mode, fraction, seed) cell")
    if a.json:
        print(json.dumps({"a": la, "b": lb, "metric": a.metric, "rows": rows}))
        return rows
    print(f"A = {la}; B = {lb}; final {a.metric}\n")
    print("| mode | fraction | seeds | A | B | B − A | 95 % t-interval (seeds) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        (ma, sa), (mb, sb), d = r["a"], r["b"], r["diff"]
        sd = {s: f" ± {s:.3f}" if s is not None else "" for s in (sa, sb)}.get
        iv = "[{:+.3f}, {:+.3f}]".format(*d["interval"]) if d["interval"] else "–"
        print(f"| {r['mode']} | {r['fraction']:g} | {len(r['seeds'])} | {ma:.3f}{sd(sa)} | {mb:.3f}{sd(sb)} | "
              f"{d['mean']:+.3f} | {iv} |")
    return rows


if __name__ == "__main__":
    main()
