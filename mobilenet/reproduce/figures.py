"""The report's PNG figures (matplotlib, Agg backend: no display needed).

* accuracy vs Mult-Adds (log x) and accuracy vs parameters over the α x ρ grid: the paper's Figures 4 and 5, with
  the paper's printed ImageNet points beside ours;
* measured inference time vs Mult-Adds: how well Mult-Adds predict speed on this machine;
* the core-idea timing: full conv vs depthwise separable layer, per memory layout.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter  # noqa: E402

from ..cost import count_cost  # noqa: E402
from ..models import create_model  # noqa: E402
from ..models import mobilenet_v1 as v1  # noqa: E402

_COLORS = {1.0: "tab:blue", 0.75: "tab:orange", 0.5: "tab:green", 0.25: "tab:red"}
_OTHER = {"mobilenet_v1_conv": ("s", "black", "Conv MobileNet"), "mobilenet_v1_shallow": ("D", "tab:purple",
                                                                                           "Shallow MobileNet")}


def _paper_points() -> list[tuple[float, int, float, float]]:
    """(α, resolution, top-1, exact Mult-Adds, exact params) for every V1 configuration the paper prints."""
    out = []
    for (alpha, res), (top1, _, _) in sorted(v1.PUBLISHED.items(), reverse=True):
        cost = count_cost(create_model("mobilenet_v1", alpha=alpha, resolution=res))
        out.append((alpha, res, top1, cost.mult_adds, cost.params_no_bn))
    return out



def _log_x(ax, which: str = "x") -> None:
    """A log axis labelled at 1, 2 and 5 times each power of ten in plain numbers: over less than a decade
    matplotlib's default labels every minor tick in powers-of-ten notation, and neighbours overlap."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())

def _grid_panel(ax, rows: list[dict], x_key: str, title: str) -> None:
    done = [r for r in rows if r.get("top1") is not None]
    for alpha, color in _COLORS.items():
        mine = [r for r in done if r["model"] == "mobilenet_v1" and r["alpha"] == alpha]
        pts = sorted(((r[x_key] / 1e6, r["top1"], r) for r in mine), key=lambda p: p[0])
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=f"α = {alpha:g}")
            for x, y, r in pts:
                if len(r.get("seeds", [])) > 1:
                    ax.plot([x, x], [r["top1"] - r["std"], r["top1"] + r["std"]], "-", color=color, alpha=0.5)
                ax.annotate(str(r["resolution"]), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    for model, (marker, color, name) in _OTHER.items():
        for r in done:
            if r["model"] == model:
                ax.plot(r[x_key] / 1e6, r["top1"], marker, color=color, label=name, markersize=7)
    if not done:
        ax.text(0.5, 0.5, "no finished runs", transform=ax.transAxes, ha="center", va="center")
    _log_x(ax)
    ax.set_title(title)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _paper_panel(ax, index: int, title: str) -> None:
    points = _paper_points()
    for alpha, color in _COLORS.items():
        pts = sorted((p[index] / 1e6, p[2], p[1]) for p in points if p[0] == alpha)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=f"α = {alpha:g}")
        for x, y, res in pts:
            ax.annotate(str(res), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    _log_x(ax)
    ax.set_title(title)
    ax.set_ylabel("ImageNet top-1 (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def accuracy_figure(rows: list[dict], x_key: str, xlabel: str, path: Path, data_name: str) -> Path:
    """Paper Figure 4 (``x_key="mult_adds"``) or 5 (``"params"``): the paper's printed points and ours."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    _paper_panel(left, 3 if x_key == "mult_adds" else 4, "paper (ImageNet, printed configurations)")
    _grid_panel(right, rows, x_key, f"this run ({data_name}, reduced resolution)")
    for ax in (left, right):
        ax.set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def time_figure(rows: list[dict], path: Path) -> Path:
    """Measured inference time per image vs Mult-Adds, log-log, one point per trained configuration."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    done = [r for r in rows if r.get("ms_per_image") is not None]
    for r in done:
        marker, color, _ = _OTHER.get(r["model"], ("o", _COLORS.get(r["alpha"], "gray"), ""))
        ax.plot(r["mult_adds"] / 1e6, r["ms_per_image"], marker, color=color)
        ax.annotate(r["label"].replace(" MobileNet", ""), (r["mult_adds"] / 1e6, r["ms_per_image"]),
                    textcoords="offset points", xytext=(3, 3), fontsize=6)
    if done:
        lo = min(r["mult_adds"] for r in done) / 1e6
        hi = max(r["mult_adds"] for r in done) / 1e6
        ref = min(done, key=lambda r: r["mult_adds"])
        ax.plot([lo, hi], [ref["ms_per_image"], ref["ms_per_image"] * hi / lo], "--", color="gray",
                label="time ∝ Mult-Adds (through the cheapest)")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no finished runs", transform=ax.transAxes, ha="center", va="center")
    _log_x(ax)
    _log_x(ax, "y")
    ax.set_xlabel("Mult-Adds (millions, exact count)")
    ax.set_ylabel("measured inference time (ms / image, batch 32)")
    ax.set_title("Do Mult-Adds predict speed on this CPU?")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def speed_figure(speed: dict, path: Path) -> Path:
    """Bars: ms per batch of the full conv, the separable layer and its two halves, per layout."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    names = ["full", "separable", "depthwise", "pointwise"]
    width = 0.38
    for i, (layout, v) in enumerate(speed["layouts"].items()):
        xs = [j + (i - 0.5) * width for j in range(len(names))]
        bars = ax.bar(xs, [1000 * v["seconds"][n] for n in names], width, label=f"{layout} (ratio "
                      f"{v['ratio']:.2f}x)")
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(names)), ["full 3x3 conv", "depthwise separable", "its depthwise half",
                                      "its pointwise half"], fontsize=8)
    ax.set_ylabel(f"ms per batch of {speed['batch']}")
    ax.set_title(f"One {speed['side']}x{speed['side']}x{speed['channels']} layer: Mult-Adds ratio "
                 f"{speed['theoretical_ratio']:.2f}x")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
