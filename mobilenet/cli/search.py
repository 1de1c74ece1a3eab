"""``mobilenet search``: the most accurate (model, alpha, resolution) within a Mult-Adds, params or latency budget."""

from __future__ import annotations

import argparse
import json
import sys

from ..deploy.backends import BACKENDS
from ..search import DEFAULT_ALPHAS, DEFAULT_RESOLUTIONS, FAMILIES, Budget, search
from .options import amount, float_list, int_list, positive_float

SOURCES = ("published = printed for this exact configuration (the papers and the released checkpoint grids); "
           "interpolated = between the model family's published points, by log Mult-Adds (never extrapolated: "
           "outside the published range there is no proxy); measured = from --results")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search", help="best (model, alpha, resolution) within a Mult-Adds / params / latency budget",
        description="Enumerate every (model, width multiplier alpha, resolution) of a grid, count its exact "
                    "Mult-Adds and parameters, keep what fits the budget and print the Pareto front of cost against "
                    "ImageNet top-1 (" + SOURCES + ").",
        epilog="examples:\n  mobilenet search --macs 150M\n  mobilenet search --macs 300M --params 3M --models v2,v3\n"
               "  mobilenet search --macs 100M --latency-ms 5 --backend torch\n"
               "  mobilenet search --macs 150M --results my_accuracies.csv --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--macs", type=amount, default=None, metavar="N",
                   help="Mult-Adds budget per image, e.g. 150M, 1.2G, 300000 (default: unlimited)")
    p.add_argument("--params", type=amount, default=None, metavar="P",
                   help="parameter budget, e.g. 2M, 2.5M (default: unlimited); also makes params a front axis")
    p.add_argument("--latency-ms", type=positive_float, default=None, metavar="MS",
                   help="batch-1 latency budget in milliseconds, measured on --backend (default torch) on this "
                        "machine for front candidates only")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="where to measure latency: torch (eager), torch-fast, onnxruntime, onnxruntime-int8 "
                        "(default: torch when --latency-ms is given, else no timing)")
    p.add_argument("--models", default="v1,v2,v3", metavar="LIST",
                   help=f"comma-separated families ({_families()}) or registered model names (default v1,v2,v3)")
    p.add_argument("--alphas", type=float_list, default=list(DEFAULT_ALPHAS), metavar="LIST",
                   help=f"width multipliers to try (default {','.join(map(str, DEFAULT_ALPHAS))})")
    p.add_argument("--resolutions", type=int_list, default=list(DEFAULT_RESOLUTIONS), metavar="LIST",
                   help=f"input sides to try (default {','.join(map(str, DEFAULT_RESOLUTIONS))})")
    p.add_argument("--results", default=None, metavar="FILE",
                   help="CSV or JSON of measured top-1 (columns model, alpha, resolution, top1 in percent); "
                        "overrides the paper's numbers and adds its configurations to the grid")
    p.add_argument("--json", action="store_true",
                   help="print the front as a JSON list of objects (model, alpha, resolution, mult_adds, params, "
                        "top1, top1_source, latency_ms)")
    p.set_defaults(func=run_search)


def run_search(args: argparse.Namespace) -> int:
    backend = args.backend or ("torch" if args.latency_ms is not None else None)
    budget = Budget(args.macs, args.params, args.latency_ms)
    result = search(budget, args.models, args.alphas, args.resolutions, args.results, backend,
                    progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps([c.to_dict() for c in result.front]))
        return 0
    limits = [f"Mult-Adds <= {_m(budget.mult_adds)}" if budget.mult_adds else "",
              f"params <= {_m(budget.params)}" if budget.params else "",
              f"latency <= {budget.latency_ms:g} ms ({backend}, batch 1)" if budget.latency_ms else ""]
    print(f"{result.searched} configurations counted, {len(result.fitting)} fit "
          f"{' and '.join(x for x in limits if x) or '(no budget)'}")
    if not result.front:
        fastest = min(result.timed, key=lambda c: c.latency_ms, default=None)
        hint = (f" (fastest timed: {fastest.model} alpha={fastest.alpha:g} res={fastest.resolution}, "
                f"{fastest.latency_ms:.2f} ms)" if fastest else "")
        print(f"nothing fits: raise the budget or widen --alphas / --resolutions{hint}", file=sys.stderr)
        return 1
    axes = " and ".join("Mult-Adds" if a == "mult_adds" else a for a in result.axes)
    print(f"Pareto front of {axes} against ImageNet top-1, {len(result.front)} configurations, cheapest first:\n")
    timed = any(c.latency_ms is not None for c in result.front)
    head = f"{'model':<28} {'alpha':>5} {'res':>4} {'Mult-Adds':>10} {'params':>8} {'top-1':>6}  {'source':<12}"
    print(head + (f" {'ms':>8}" if timed else ""))
    for c in result.front:
        row = (f"{c.model:<28} {c.alpha:>5.2f} {c.resolution:>4} {_m(c.mult_adds):>10} {_m(c.params):>8} "
               f"{c.top1:>5.1f}%  {c.top1_source:<12}")
        print(row + (f" {c.latency_ms:>8.2f}" if timed else ""))
    print(f"\ntop-1 sources: {SOURCES}.")
    if result.no_proxy:
        models = sorted({c.model for c in result.no_proxy})
        print(f"{len(result.no_proxy)} fitting configurations lie outside their family's published range and have no "
              f"accuracy proxy (left out of the front): {', '.join(models)}")
    return 0


def _families() -> str:
    return ", ".join(f"{key} = {' + '.join(names)}" for key, names in FAMILIES.items())


def _m(value: int) -> str:
    if value >= 10**9:
        return f"{value / 1e9:.2f}G"
    return f"{value / 1e6:.1f}M" if value >= 10**5 else f"{value:,}"
