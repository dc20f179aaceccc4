"""Paired comparison of two arms from two ``label_efficiency.py`` outputs (or one).

``label_efficiency.py`` pairs the arms of one run (one network, several inits). Comparisons
across its runs (U-Net against PSPNet, encoder-only against whole-network transfer) pair
the cells that share mode, label fraction and seed: the seed draws the mask subset, so
such cells trained on the same masks. Prints one markdown row per (mode, fraction):
both arms' final mean IoU (mean ± sd over seeds), the paired difference B − A and its 95 %
t-interval over seeds; ``--json`` prints the rows as JSON instead.

    python benchmarks/compare_arms.py le_phantom:random le_phantom_unet:random
    python benchmarks/compare_arms.py le_phantom:doll le_phantom_enc:doll --metric mean_iou
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paired_stats as ps  # noqa: E402  (benchmarks/ is not a package)


def cells(spec: str, metric: str) -> tuple[str, dict]:
    """``OUT:ARM`` -> (label, {(mode, fraction, seed): metric})."""
    out, sep, arm = spec.rpartition(":")
    if not sep or not out or not arm:
        raise SystemExit(f"compare_arms: expected OUT:ARM (a label_efficiency.py --out folder and an arm name), "
                         f"got {spec!r}")
    path = Path(out) / "label_efficiency.json"
    if not path.is_file():
        raise SystemExit(f"compare_arms: {path} does not exist; run benchmarks/label_efficiency.py --out {out}")
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
        diffs = [y - x for x, y in zip(va, vb)]
        rows.append({"mode": mode, "fraction": frac, "seeds": seeds, "a": ps.mean_sd(va), "b": ps.mean_sd(vb),
                     "diff": ps.t_interval(diffs)})
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
