"""Writes the reproduction report: ``report.md`` with PNG figures, plus every number as CSV and JSON."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from . import figures
from .tables import Cell, CostTable

FIGURES = {
    "accuracy_vs_mult_adds": "figures/accuracy_vs_mult_adds.png",
    "accuracy_vs_params": "figures/accuracy_vs_params.png",
    "time_vs_mult_adds": "figures/time_vs_mult_adds.png",
    "core_speed": "figures/core_speed.png",
}


def _paper_top1(table: str, config: dict) -> dict | None:
    """model -> the paper's ImageNet top-1 for the rows of Table 4 or 5 (at α = 1, or Table 5's α = 0.75)."""
    from ..models import published_table

    pairs = {"table4": [("mobilenet_v1_conv", 1.0), ("mobilenet_v1", 1.0)],
             "table5": [("mobilenet_v1", 0.75), ("mobilenet_v1_shallow", 1.0)]}.get(table)
    return None if pairs is None else {m: published_table(m)[(a, 224)][0] for m, a in pairs}


def _md_table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def cost_table_markdown(table: CostTable) -> list[str]:
    """One cost table: columns with a printed number get an "ours" and a "paper" column, with the match mark."""
    compared = {j for row in table.rows for j, c in enumerate(row) if isinstance(c, Cell) and c.printed is not None}
    header = []
    for j, col in enumerate(table.columns):
        header += [f"{col} (ours)", f"{col} (paper)"] if j in compared else [col]
    rows = []
    for row in table.rows:
        out = []
        for j, c in enumerate(row):
            text = c.ours_text() if isinstance(c, Cell) else str(c)
            out += [text, c.paper_text() if isinstance(c, Cell) else "—"] if j in compared else [text]
        rows.append(out)
    lines = [f"### {table.title}", ""] + _md_table(header, rows)
    return lines + [f"- {note}" for note in table.notes] + [""]


def match_summary(tables: list[CostTable]) -> dict:
    """Counts of compared cells: matching, mismatching with an explained erratum, and unexplained mismatches."""
    cells = [c for t in tables for _, _, c in t.cells() if c.printed is not None]
    return {"compared": len(cells), "match": sum(bool(c.match) for c in cells),
            "erratum": sum(not c.match and bool(c.erratum) for c in cells),
            "unexplained": sum(not c.match and not c.erratum for c in cells)}


def _spearman(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None

    def ranks(v):
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        for rank, i in enumerate(order):
            r[i] = float(rank)
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return num / den if den else None


def _fmt(v, spec=".1f", none="—"):
    return none if v is None else format(v, spec)


def _accuracy_rows(rows: list[dict], keys: list[str], paper: dict | None = None) -> list[list]:
    by_key = {r["key"]: r for r in rows}
    out = []
    for key in keys:
        r = by_key.get(key)
        if r is None:
            continue
        seeds = ", ".join(f"{a:.1f}" for a in r["top1_by_seed"])
        out.append([r["label"], f"{r['top1']:.2f} ± {r['std']:.2f}" if len(r["seeds"]) > 1 else f"{r['top1']:.2f}",
                    seeds, _fmt(r.get("val_top1_epoch1")), _fmt(r["mult_adds"] / 1e6, ".2f"),
                    _fmt(r["params"] / 1e6, ".3f"), _fmt(r.get("ms_per_image"), ".2f")]
                   + ([_fmt((paper or {}).get(r["model"]), ".1f")] if paper is not None else []))
    return out


def sweep_markdown(exp: dict) -> list[str]:
    """The learning-rate sweep: val top-1 (the calibration split) at each rate, and the chosen rate's shortfall."""
    sweep = exp.get("sweep") or []
    if not sweep:
        return []
    lr = exp["config"]["lr"]
    rates = sorted({float(rate) for s in sweep for rate in s["val_top1"]})
    rows = [[s["label"], *(_fmt(_at(s["val_top1"], rate)) for rate in rates), f"{s['best_lr']:g}",
             f"{s['chosen_behind_best']:.1f}"] for s in sweep]
    worst = max(s["chosen_behind_best"] for s in sweep)
    return [f"### Learning-rate sweep (val top-1 %, seed 0; the chosen rate is {lr:g})", "",
            *_md_table(["Model", *(f"lr {rate:g}" for rate in rates), "best rate", "chosen rate behind best"],
                       rows),
            f"Every swept model at the chosen rate is within {worst:.1f} points of its best rate in the sweep "
            f"({'within' if worst <= 1.0 else 'NOT within'} the 1-point stability target). Rates are judged on "
            "the validation split only; no setting was chosen by a test result.", ""]


def _at(by_rate: dict, rate: float):
    """A rate-keyed value; JSON turns the float keys into strings, so a re-rendered report looks up either."""
    for key, value in by_rate.items():
        if float(key) == rate:
            return value
    return None


_OPTIMIZER_TEXT = {
    "sgd": "SGD (momentum 0.9)",
    "rmsprop": "RMSprop (decay 0.9, momentum 0.9)",
    "adamw": "AdamW (betas 0.9, 0.999)",
    "lars": "LARS (SGD, momentum 0.9, on gradients rescaled per tensor to the tensor's norm, so the rate is each "
            "layer's relative step)",
}


def accuracy_markdown(exp: dict) -> list[str]:
    """Section 3: the settings, the ρ mapping, Tables 4-7 (mean ± std over seeds), the sweep and the grid."""
    cfg = exp["config"]
    res = exp["resolutions"]
    paper_px = {"1": 224, "6/7": 192, "5/7": 160, "4/7": 128}
    n_runs, hours = len(exp["runs"]), exp.get("train_seconds", 0) / 3600
    lines = [
        f"Every model is trained from scratch by `mobilenet.train` on **{cfg['data']}** "
        f"({len(exp['class_names'])} classes), {exp['train_samples']:,} training images, {cfg['epochs']} epochs, "
        f"batch {cfg['batch_size']}, {_OPTIMIZER_TEXT.get(cfg.get('optimizer', 'sgd'), cfg.get('optimizer'))} "
        f"lr {cfg['lr']:g} with a {cfg['warmup_epochs']:g}-epoch warm-up and cosine decay, label smoothing 0.1, "
        "'light' augmentation, "
        f"fp32, {'channels_last' if cfg.get('channels_last') else 'NCHW'}: one recipe for every model, as in the "
        f"paper. Seeds 0-{cfg['seeds'] - 1} for every Table 4-7 configuration; seed s gives every model the same "
        f"data order and augmentation, so differences pair up seed by seed. Accuracy is top-1 on the "
        f"{exp['eval_samples']:,}-image test split after the last epoch (no checkpoint is picked by its score); "
        f"'epoch-1 val' is the lowest validation top-1 over the seeds after the first epoch "
        f"({exp.get('val_samples', 0):,} images; chance {100 / max(1, len(exp['class_names'])):.1f} %). "
        f"{n_runs} runs, {hours:.2f} h of training in all. Time per image: median over batches of 32, eval "
        "mode, fp32, NCHW, on this machine.",
        "",
        "The dataset's design, the rate and the length were calibrated on the validation split only "
        "([docs/calibration.md](../../docs/calibration.md) has the numbers); no setting was chosen by a test result.",
        "",
        "The resolution multiplier maps to smaller inputs in the same ratios:",
        "",
        *_md_table(["ρ", "paper (px)", "this run (px)"], [[k, paper_px.get(k, "—"), v] for k, v in res.items()]),
    ]
    head = ["Model", "test top-1 % (mean ± std)", "per seed", "epoch-1 val %", "Mult-Adds (M)", "params (M)",
            "ms / image"]
    titles = {"table4": "Table 4: depthwise separable vs full convolution",
              "table5": "Table 5: narrow vs shallow", "table6": "Table 6: width multiplier α",
              "table7": "Table 7: resolution multiplier ρ", "grid": "All 16 α x ρ configurations (Figures 4-5)"}
    for name, title in titles.items():
        paper = _paper_top1(name, cfg)
        header = head + (["paper ImageNet top-1 %"] if paper is not None else [])
        lines += [f"### {title}", ""] + _md_table(header, _accuracy_rows(exp["rows"], exp["tables"][name], paper))
        if name == "table4" and cfg.get("table4_alpha", 1.0) != 1.0:
            lines += [f"- Both networks at α = {cfg['table4_alpha']:g} (the paper's are at α = 1): Conv MobileNet at "
                      "α = 1 costs 8.6x the Mult-Adds of MobileNet at α = 1 and trains about 6x slower here. The "
                      "cost ratio between the two stays about the same at any α.", ""]
        if name == "grid":
            lines += ["- Grid points outside Tables 4-7 are trained at seed 0 only.", ""]
    return lines + sweep_markdown(exp)


def speed_markdown(speed: dict) -> list[str]:
    rows = []
    for layout, v in speed["layouts"].items():
        s = v["seconds"]
        rows.append([layout, *(f"{1000 * s[k]:.1f}" for k in ("full", "separable", "depthwise", "pointwise")),
                     f"{v['ratio']:.2f}x", f"{speed['theoretical_ratio']:.2f}x"])
    m = speed["mult_adds"]
    return [
        f"One {speed['side']}x{speed['side']} layer, {speed['channels']} -> {speed['channels']} channels, "
        f"3x3, batch {speed['batch']}, the library's own modules (conv + BN + ReLU, eval mode): "
        f"{m['full']:,} Mult-Adds per image as a full conv, {m['separable']:,} as a depthwise separable layer. "
        f"Median of {speed['repeats']} timed calls, the variants timed in alternation, {speed['threads']} "
        f"thread{'s' if speed['threads'] != 1 else ''}, "
        f"load average {speed.get('load', '?')} when measured.",
        "",
        *_md_table(["layout", "full conv (ms)", "separable (ms)", "depthwise half (ms)", "pointwise half (ms)",
                    "measured ratio", "theoretical 1/(1/N + 1/D_K²)"], rows),
        f"![core speed]({FIGURES['core_speed']})", "",
    ]


def figures_markdown(exp: dict | None) -> list[str]:
    lines = [f"![accuracy vs Mult-Adds]({FIGURES['accuracy_vs_mult_adds']})", "",
             f"![accuracy vs params]({FIGURES['accuracy_vs_params']})", "",
             f"![time vs Mult-Adds]({FIGURES['time_vs_mult_adds']})", ""]
    done = [r for r in (exp or {}).get("rows", []) if r.get("ms_per_image") is not None]
    rho = _spearman([r["mult_adds"] for r in done], [r["ms_per_image"] for r in done])
    if rho is not None:
        cheap = min(done, key=lambda r: r["mult_adds"])
        dear = max(done, key=lambda r: r["mult_adds"])
        lines += [f"Mult-Adds vs measured time over the {len(done)} trained configurations: Spearman rank "
                  f"correlation {rho:.2f}. From the cheapest ({cheap['label']}) to the most expensive "
                  f"({dear['label']}) the Mult-Adds grow {dear['mult_adds'] / cheap['mult_adds']:.1f}x and the "
                  f"measured time {dear['ms_per_image'] / cheap['ms_per_image']:.1f}x.", ""]
    return lines


def claims_markdown(claims: list[dict]) -> list[str]:
    rows = [[c["claim"], c["paper"], c["ours"], f"**{c['verdict']}**"] for c in claims]
    lines = _md_table(["Claim", "Paper", "This run", "Verdict"], rows)
    return lines + [f"- *{c['id']}*: {c['why']}" for c in claims] + [""]


def write_report(out: Path, meta: dict, tables: list[CostTable], speed: dict, exp: dict, claims: list[dict]) -> Path:
    """Writes report.md, figures/*.png, cost_tables.csv/json, experiments.csv/json, speed.json, claims.json and
    report.json under ``out``; returns the path of report.md."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    data_name = exp["config"]["data"]
    figures.accuracy_figure(exp["rows"], "mult_adds", "Mult-Adds (millions, exact count)",
                            out / FIGURES["accuracy_vs_mult_adds"], data_name)
    figures.accuracy_figure(exp["rows"], "params", "parameters (millions, exact count)",
                            out / FIGURES["accuracy_vs_params"], data_name)
    figures.time_figure(exp["rows"], out / FIGURES["time_vs_mult_adds"])
    figures.speed_figure(speed, out / FIGURES["core_speed"])

    with open(out / "cost_tables.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["table", "row", "column", "ours", "exact", "paper", "match", "erratum"])
        for t in tables:
            for row, col, c in t.cells():
                w.writerow([t.key, row, col, c.ours_text(), c.exact, "" if c.printed is None else c.printed,
                            "" if c.match is None else c.match, c.erratum])
    with open(out / "experiments.csv", "w", newline="") as f:
        cols = ["run", "purpose", "key", "label", "model", "alpha", "rho", "resolution", "seed", "lr", "status",
                "top1", "split", "val_top1", "mult_adds", "params", "ms_per_image", "train_seconds", "steps",
                "images_per_s"]
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(exp["runs"])
    table_dicts = [{"key": t.key, "title": t.title, "columns": t.columns, "notes": t.notes,
                    "rows": [[c.to_dict() if isinstance(c, Cell) else c for c in row] for row in t.rows]}
                   for t in tables]
    summary = match_summary(tables)
    dumps = {"cost_tables.json": {"summary": summary, "tables": table_dicts}, "experiments.json": exp,
             "speed.json": speed, "claims.json": claims,
             "report.json": {"meta": meta, "cost_match": summary, "claims": claims, "speed": speed,
                             "experiments": exp["rows"], "figures": FIGURES}}
    for name, obj in dumps.items():
        (out / name).write_text(json.dumps(obj, indent=1, default=str) + "\n")

    lines = [
        "# MobileNet (arXiv 1704.04861, 1801.04381), reproduced from this code", "",
        f"Command: `{meta['command']}`  ",
        f"Finished {meta['finished']} after {meta['seconds'] / 60:.1f} minutes (cost tables "
        f"{meta['phases']['tables']:.0f} s, speed {meta['phases']['speed']:.0f} s, training "
        f"{meta['phases']['experiments']:.0f} s).  ",
        f"Machine: {meta['machine']}.", "",
    ]
    if meta.get("quick"):
        lines += ["**Quick mode**: a smoke test with very few training samples and steps; the layout and cost "
                  "tables are the full ones, but its accuracies and verdicts on accuracy mean nothing.", ""]
    lines += ["At a glance (details and rules in section 5):", ""]
    lines += [f"- {c['claim']} **{c['verdict']}**: {c['ours']}" for c in claims] + [""]
    lines += [
        "Contents: 1. Cost tables · 2. Speed of the core idea · 3. Accuracy at small scale · 4. Figures · "
        "5. Claims · 6. Files", "",
        "## 1. Cost tables, exact, beside the paper's printed numbers", "",
        "Ours: exact counts by `mobilenet.count_cost` on the models this library builds. A cell matches (✓) when "
        "rounding or truncating our exact number to the printed precision gives the printed number (the papers do "
        "both). ✗ (erratum): the paper's number is wrong or inconsistent, explained under the table. ✗: an "
        "unexplained mismatch.", "",
        f"**{summary['match']} of {summary['compared']} printed cells match; {summary['erratum']} differ where the "
        f"paper is in error (explained below); {summary['unexplained']} unexplained.**", "",
    ]
    for t in tables:
        lines += cost_table_markdown(t)
    lines += ["## 2. Speed of the core idea", ""] + speed_markdown(speed)
    lines += ["## 3. Accuracy at small scale", ""] + accuracy_markdown(exp)
    lines += ["## 4. Figures", ""] + figures_markdown(exp)
    lines += ["## 5. Claims", "", "Each verdict follows from this run's numbers by the rule given under the table "
              "(in `mobilenet/reproduce/claims.py`).", ""] + claims_markdown(claims)
    lines += ["## 6. Files", "", "`cost_tables.csv` / `.json` (every compared cell), `experiments.csv` / `.json` "
              "(every run and seed), `speed.json`, `claims.json`, `report.json` (all of it), `figures/*.png`.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
