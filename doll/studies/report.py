"""What a study writes: ``study.json`` (every cell, group and comparison), ``summary.md``
(pasteable tables with the command, machine and date) and ``report.html`` (the same tables
and figures drawn by matplotlib through ``doll.report.plots``)."""
from __future__ import annotations

import html
import platform
from pathlib import Path

from doll.report.plots import bar_chart, interval_chart, line_chart
from doll.utils import atomic_path, write_json

METRIC_NAMES = {"mean_iou": "mean IoU", "positives_mean_iou": "IoU on the test images with a mask",
                "negatives_false_positive_area": "false-positive area on the test images without a mask"}


def machine(devices: list[str]) -> str:
    """The machine in words: CPU architecture, system, Python, torch and the devices used."""
    import torch

    names = []
    for d in devices:
        if str(d).startswith("cuda") and torch.cuda.is_available():
            index = int(str(d).split(":")[1]) if ":" in str(d) else 0
            names.append(f"{d} ({torch.cuda.get_device_name(index)})")
        else:
            names.append(str(d))
    return (f"{platform.node() or 'unknown host'}: {platform.machine()} {platform.system()}, Python "
            f"{platform.python_version()}, torch {torch.__version__}, devices {', '.join(names)}")


def _f(v, sign: bool = False, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _iv(iv, sign: bool = True) -> str:
    return f"[{_f(iv[0], sign)}, {_f(iv[1], sign)}]" if iv else "–"


def _pm(block: dict | None) -> str:
    if not block or block.get("mean") is None:
        return "–"
    return _f(block["mean"]) + (f" ± {block['sd']:.3f}" if block.get("sd") is not None else "")


def _masks(entry: dict) -> str:
    return f"{entry.get('n_masks')} ({entry['fraction']:g})"


def _steps(v) -> str:
    return "never" if v is None else f"{v:g}"


def tables(doc: dict) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(title, note, header, rows) of every table of the summary."""
    s, ref = doc["settings"], doc["reference"]
    inits = [i["name"] for i in doc["inits"]]
    groups = {(g["init"], g["mode"], g["fraction"]): g for g in doc["groups"]}
    keys = sorted({(g["mode"], g["fraction"]) for g in doc["groups"]}, key=lambda k: (k[0], k[1]))
    covid = any("positives_mean_iou" in g for g in doc["groups"])
    seeds = max((g["n_seeds"] for g in doc["groups"]), default=0)
    out = []
    for metric in ("mean_iou", "positives_mean_iou", "negatives_false_positive_area") if covid else ("mean_iou",):
        rows = [[mode, _masks(groups[next(k for k in groups if k[1:] == (mode, frac))]),
                 *[_pm((groups.get((i, mode, frac)) or {}).get(metric)) for i in inits]] for mode, frac in keys]
        out.append((f"Final {METRIC_NAMES[metric]} (mean ± sd over {seeds} seed{'s' if seeds != 1 else ''})",
                    f"The last evaluation of {s['max_steps']} optimiser steps; sd over seeds with two seeds or more.",
                    ["mode", "masks (fraction)", *inits], rows))
    comp = doc["comparisons"]
    for metric in ("mean_iou", "positives_mean_iou", "negatives_false_positive_area") if covid else ("mean_iou",):
        rows = []
        for c in comp:
            d = c["final"].get(metric)
            if d is None:
                continue
            rows.append([c["mode"], _masks(c), c["init"], str(len(c["seeds"])), _f(d["mean"], True), _iv(d.get("ci95_t")),
                         _iv(d.get("ci95_bootstrap")) if metric == "mean_iou" else "–"])
        if rows:
            out.append((f"Paired difference in final {METRIC_NAMES[metric]}: init − {ref}",
                        "Seed by seed on the same masks; 95 % t-interval over seeds, and a 95 % percentile bootstrap "
                        "over test images (paired by image; mean IoU only).",
                        ["mode", "masks (fraction)", "init", "pairs", "difference", "95 % interval (seeds, t)",
                         "95 % interval (test images, bootstrap)"], rows))
    rows = []
    for g in doc["groups"]:
        rows.append([g["mode"], _masks(g), g["init"],
                     *[f"{_pm(p)} (step {_steps(max((x for x in p['steps'] if x is not None), default=None))})"
                       for p in g["iou_at"]]])
    out.append(("Along the way: mean IoU after 10 / 25 / 50 % of the budget",
                "Mean ± sd over seeds at the first evaluation at or after that step.",
                ["mode", "masks (fraction)", "init", "10 %", "25 %", "50 %"], rows))
    rows = []
    for c in comp:
        st = c["steps_to_reference_final"]
        rows.append([c["mode"], _masks(c), c["init"],
                     *[f"{_f(p['mean'], True)} {_iv(p.get('ci95_t'))}" for p in c["along_the_way"]],
                     f"{_steps(st['median'])} ({st['reached']}/{st['n']} seeds)", _steps(st["reference_median"])])
    if rows:
        out.append((f"Head start: paired difference along the way, and steps to reach {ref}'s final IoU",
                    f"Difference init − {ref} with its 95 % t-interval over seeds; steps: the median over seeds of "
                    f"the first evaluation at which the arm reaches the final IoU {ref} reached with the same seed "
                    f"(never: not within {s['max_steps']} steps).",
                    ["mode", "masks (fraction)", "init", "at 10 %", "at 25 %", "at 50 %", "steps to reach",
                     f"{ref} itself"], rows))
    return out


def markdown(doc: dict) -> str:
    s = doc["settings"]
    first = doc["cells"][0] if doc["cells"] else {}
    lines = [f"# doll study: --task {s['task']} on {s['dataset']}", "",
             f"Made with `{doc['doll_command']}`", "",
             f"on {doc['machine']}, {doc['date']}. {doc['n_cells']} cells (init × mode × fraction × seed), each "
             f"{s['max_steps']} optimiser steps, batch {s['batch_size']}; reference: {doc['reference']}; test split: "
             f"{first.get('test_split')} ({first.get('n_test')} images).", ""]
    for title, note, header, rows in tables(doc):
        lines += [f"## {title}", "", note, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def figures(out: Path, doc: dict) -> list[tuple[str, str]]:
    """Draw the figures into out/figures; (file name, caption) of each."""
    folder = out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    groups = doc["groups"]
    covid = any("positives_mean_iou" in g for g in groups)
    for metric in ("mean_iou", "positives_mean_iou") if covid else ("mean_iou",):
        series = {}
        for init in [i["name"] for i in doc["inits"]]:
            for mode in dict.fromkeys(g["mode"] for g in groups):
                pts = sorted((g for g in groups if g["init"] == init and g["mode"] == mode and g.get(metric)),
                             key=lambda g: g["fraction"])
                if pts:
                    ivs = [g[metric].get("ci95_t") for g in pts]
                    series[f"{init}, {mode}"] = ([g["n_masks"] for g in pts], [g[metric]["mean"] for g in pts],
                                                 [iv[0] if iv else None for iv in ivs],
                                                 [iv[1] if iv else None for iv in ivs])
        name = f"{metric}_vs_masks.png"
        interval_chart(folder / name, series, xlabel="training masks (images with a mask, log scale)",
                       ylabel=f"final {METRIC_NAMES[metric]} (test split)", logx=True,
                       title=f"Final {METRIC_NAMES[metric]} after {doc['settings']['max_steps']} steps; bars: 95 % t-interval over seeds")
        made.append((name, f"Final {METRIC_NAMES[metric]} against the number of training masks (mean over seeds, "
                           "bars: 95 % t-interval of the mean over seeds, drawn with two seeds or more)."))
    smallest = min((g["fraction"] for g in groups), default=None)
    if smallest is not None:
        series = {f"{g['init']}, {g['mode']}": ([r["step"] for r in g["curve"]], [r["test_iou"] for r in g["curve"]])
                  for g in groups if g["fraction"] == smallest}
        n = next(g["n_masks"] for g in groups if g["fraction"] == smallest)
        line_chart(folder / "iou_vs_steps.png", series, xlabel="optimiser step", ylabel="mean IoU (test split)", integer_x=True,
                   title=f"Test IoU along the way with {n} masks (fraction {smallest:g}), mean over seeds")
        made.append(("iou_vs_steps.png", f"Mean IoU on the test split against optimiser steps at the smallest fraction "
                                         f"({smallest:g}, {n} masks), mean over seeds."))
    largest = max((g["fraction"] for g in groups), default=None)
    if largest is not None:
        at = [g for g in groups if g["fraction"] == largest and g.get("per_structure")]
        structures = list(at[0]["per_structure"]) if at else []
        if structures:
            series = {f"{g['init']}, {g['mode']}": ([g["per_structure"][n]["mean"] for n in structures],
                                                    [g["per_structure"][n]["sd"] for n in structures]) for g in at}
            bar_chart(folder / "per_structure.png", structures, series, ylabel="IoU (test split)",
                      title=f"Per-structure IoU with {at[0]['n_masks']} masks (fraction {largest:g}); whiskers: sd over seeds")
            made.append(("per_structure.png", f"IoU per structure at fraction {largest:g} (mean over seeds, whiskers: "
                                              "sd over seeds)."))
    return made


def page(doc: dict, figs: list[tuple[str, str]]) -> str:
    s = doc["settings"]
    parts = [f"<h1>doll study: --task {html.escape(s['task'])} on {html.escape(s['dataset'])}</h1>",
             f"<p>Made with <code>{html.escape(doc['doll_command'])}</code><br>on {html.escape(doc['machine'])}, "
             f"{html.escape(doc['date'])}. {doc['n_cells']} cells, each {s['max_steps']} optimiser steps; reference: "
             f"<b>{html.escape(doc['reference'])}</b>. Numbers: <a href=\"study.json\">study.json</a>; tables to "
             "paste: <a href=\"summary.md\">summary.md</a>.</p>"]
    parts += [f"<figure><img src=\"figures/{html.escape(f)}\" alt=\"{html.escape(c)}\"><figcaption>{html.escape(c)}"
              "</figcaption></figure>" for f, c in figs]
    for title, note, header, rows in tables(doc):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
        parts.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(note)}</p><table><tr>{head}</tr>{body}</table>")
    settings = "".join(f"<tr><td>{html.escape(k.replace('_', ' '))}</td><td>{html.escape(str(v))}</td></tr>"
                       for k, v in s.items())
    parts.append(f"<details><summary>Settings</summary><table><tr><th>setting</th><th>value</th></tr>{settings}"
                 "</table></details>")
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>doll study</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 10px;text-align:left}"
            "img{max-width:100%}table{border-collapse:collapse}tr:nth-child(even){background:#f4f4f4}"
            "figcaption{font-size:90%;color:#444}</style></head><body>" + "\n".join(parts) + "</body></html>\n")


def write_all(out: Path, doc: dict) -> None:
    write_json(out / "study.json", doc)
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(markdown(doc), encoding="utf-8")
    figs = figures(out, doc)
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(page(doc, figs), encoding="utf-8")
