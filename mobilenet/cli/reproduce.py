"""``mobilenet reproduce``: regenerate the MobileNet paper's tables, claims and trade-off plots from this code."""

from __future__ import annotations

import argparse
import shlex
import sys

from .options import positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce", help="regenerate the MobileNet paper's tables, claims and plots into a report",
        description="Write a self-contained report (report.md, PNG figures, CSV and JSON) that sets this library's "
                    "exact cost counts beside every number the MobileNet papers print (V1 Tables 1-7, the 16 "
                    "alpha x resolution models, V2 Table 2), times one full 3x3 conv against one depthwise "
                    "separable layer, trains the paper's Table 4-7 comparisons at small scale, and says which of "
                    "the paper's claims hold in what was run. The full run takes about an hour on 2 CPU cores; "
                    "--quick is a few-minute smoke test with the same layout.",
    )
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 96 samples per split, 1 epoch, 1 seed (accuracies are meaningless)")
    p.add_argument("--data", default="shapes", metavar="D",
                   help="dataset to train on: the embedded 'shapes' (default) or a path (class folders, ImageNet "
                        "layout, CIFAR or MNIST directory), as for `mobilenet train --data`")
    p.add_argument("--out", default="results/reproduce", metavar="DIR",
                   help="report directory (default results/reproduce)")
    p.add_argument("--seeds", type=positive_int, default=None, metavar="N",
                   help="seeds per configuration (default 2, quick 1); seeds after the first run only while the "
                        "time budget allows")
    p.add_argument("--base-resolution", type=positive_int, default=64, metavar="PX",
                   help="input side standing for the paper's 224 (rho = 1); rho = 6/7, 5/7, 4/7 become "
                        "round(PX x rho) (default 64: 64, 55, 46, 37)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs per model, the same for all (default: the most for which Tables 4-7 fit the time "
                        "budget at this machine's measured speed; quick 1)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="training samples, and at most this many evaluation samples per split "
                        "(default all, quick 96)")
    p.add_argument("--table4-alpha", type=positive_float, default=None, metavar="A",
                   help="width of Table 4's pair, MobileNet and Conv MobileNet (default 0.5: Conv MobileNet at "
                        "alpha 1 alone would take most of an hour on 2 cores; the paper's is 1)")
    p.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (default 0.6, for batch 64)")
    p.add_argument("--optimizer", choices=("sgd", "rmsprop"), default=None, help="default sgd (momentum 0.9)")
    p.add_argument("--budget-minutes", type=positive_float, default=None, metavar="M",
                   help="time the training may take in all; runs that would not fit are skipped and listed as "
                        "skipped (default 50; quick: no limit)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="intra-op CPU threads (default: 1 when the machine is already busy, else torch's default)")
    p.add_argument("--rerender", action="store_true",
                   help="write the report in --out again from the run's saved numbers (JSON), judging the claims "
                        "again, without measuring or training")
    p.add_argument("--keep-runs", action="store_true", help="keep every run's checkpoints under DIR/runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..reproduce import ExperimentConfig, rerender, reproduce

    if args.rerender:
        print(f"report: {rerender(args.out)}")
        return 0

    overrides = {"data": args.data, "base_resolution": args.base_resolution, "progress": not args.no_progress,
                 "keep_runs": args.keep_runs}
    for name in ("seeds", "epochs", "limit", "lr", "optimizer", "table4_alpha"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.budget_minutes is not None:
        overrides["budget_s"] = 60 * args.budget_minutes
    if args.keep_runs:
        overrides["workdir"] = f"{args.out}/runs"
    cfg = ExperimentConfig.quick(**overrides) if args.quick else ExperimentConfig(**overrides)
    command = "mobilenet " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] \
        else "mobilenet reproduce"
    path = reproduce(args.out, cfg, quick=args.quick, speed_repeats=3 if args.quick else 20,
                     threads=args.threads, command=command)
    print(f"report: {path}")
    return 0
