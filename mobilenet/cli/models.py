"""``mobilenet list`` and ``mobilenet summary``: what models exist and what exactly they cost."""

from __future__ import annotations

import argparse
import json

from ..cost import count_cost, matches_printed
from ..models import create_model, list_models
from .options import add_model_options, float_list, int_list, model_kwargs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the registered models", description="List the registered models.")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'mobilenet_v1*'")
    p.add_argument("--cost", action="store_true",
                   help="also print each model's Mult-Adds and params at alpha 1, 224x224, 1000 classes, as a "
                        "Markdown table beside the paper's numbers")
    p.set_defaults(func=run_list)

    p = sub.add_parser(
        "summary", help="per-layer Mult-Adds and params of a model",
        description="Print a model's per-layer table (output shape, Mult-Adds, params), its totals and the share "
                    "of each layer type, counted exactly in the papers' convention.",
    )
    add_model_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=run_summary)

    p = sub.add_parser(
        "grid", help="cost of a model over a width x resolution grid, beside the paper's numbers",
        description="Count Mult-Adds and params for every (alpha, resolution) pair and print them beside the "
                    "numbers the paper prints for that configuration (V1: Tables 6, 7 and 9).",
    )
    p.add_argument("model", metavar="NAME", nargs="?", default="mobilenet_v1", help="default mobilenet_v1")
    p.add_argument("--alphas", type=float_list, default=[1.0, 0.75, 0.5, 0.25], help="default 1,0.75,0.5,0.25")
    p.add_argument("--resolutions", type=int_list, default=[224, 192, 160, 128], help="default 224,192,160,128")
    p.set_defaults(func=run_grid)


def run_list(args: argparse.Namespace) -> int:
    if not args.cost:
        for name in list_models(args.pattern):
            print(name)
        return 0
    print("| model | Mult-Adds | params | paper Mult-Adds | paper params | paper top-1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in list_models(args.pattern):
        model = create_model(name)
        cost, paper = count_cost(model), model.published or {}
        print(f"| `{name}` | {cost.mult_adds:,} | {cost.params:,} | {paper.get('mult_adds_m', '-')}M "
              f"| {paper.get('params_m', '-')}M | {paper.get('top1', '-')}% |")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    model = create_model(args.model, **model_kwargs(args))
    cost = count_cost(model)
    if args.json:
        out = cost.to_dict()
        out["published"] = model.published
        print(json.dumps(out))
    else:
        print(cost.table())
        if model.published:
            p = model.published
            print(f"paper: {p['top1']}% top-1, {p['mult_adds_m']}M Mult-Adds, {p['params_m']}M params")
    return 0


def run_grid(args: argparse.Namespace) -> int:
    print(f"{args.model}: Mult-Adds and params counted here, beside the paper's printed numbers (ImageNet top-1)")
    print(f"{'alpha':>5} {'res':>4} {'Mult-Adds':>13} {'paper':>6} {'params':>10} {'paper':>6} {'top-1':>6}")
    for alpha in args.alphas:
        for res in args.resolutions:
            model = create_model(args.model, alpha=alpha, resolution=res)
            cost = count_cost(model)
            row = f"{alpha:>5} {res:>4} {cost.mult_adds / 1e6:>12.1f}M"
            paper = model.published
            if paper:
                ok = matches_printed(cost.mult_adds / 1e6, paper["mult_adds_m"])
                row += f" {paper['mult_adds_m']:>5}{'✓' if ok else '✗'}"
            else:
                row += f" {'-':>6}"
            row += f" {cost.params / 1e6:>9.2f}M"
            row += f" {paper['params_m']:>6} {paper['top1']:>5}%" if paper else f" {'-':>6} {'-':>6}"
            print(row)
    return 0
