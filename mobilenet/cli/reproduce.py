"""``mobilenet reproduce``: regenerate the MobileNet paper's tables, claims and trade-off plots from this code."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..optim import OPTIMIZERS
from .options import positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce", help="regenerate the MobileNet paper's tables, claims and plots into a report",
        description="Write a self-contained report (report.md, PNG figures, CSV and JSON) that sets this library's "
                    "exact cost counts beside every number the MobileNet papers print (V1 Tables 1-7, the 16 "
                    "alpha x resolution models, V2 Table 2), times one full 3x3 conv against one depthwise "
                    "separable layer, trains the paper's Table 4-7 comparisons at small scale with several paired "
                    "seeds, a learning-rate sweep and the 16-point grid, and judges each claim from a 95 %% "
                    "interval. The full run takes about 2 hours on 2 CPU cores and is resumable: run the same "
                    "command again after an interruption and finished runs are kept. Under torchrun every run "
                    "trains data-parallel with the same global batch. --quick is a smoke test with the same layout.",
    )
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 128 samples per split at 32 px, 1 epoch, 2 seeds (accuracies are meaningless)")
    p.add_argument("--data", default=None, metavar="D",
                   help="dataset to train on: the embedded 'patterns' (default) or 'shapes', or a path (class "
                        "folders, ImageNet layout, CIFAR or MNIST directory), as for `mobilenet train --data`")
    p.add_argument("--out", default="results/reproduce", metavar="DIR",
                   help="report directory (default results/reproduce); finished runs are kept in DIR/runs")
    p.add_argument("--seeds", type=positive_int, default=None, metavar="N",
                   help="seeds per Table 4-7 configuration, the same seeds for every model (default 3)")
    p.add_argument("--base-resolution", type=positive_int, default=None, metavar="PX",
                   help="input side standing for the paper's 224 (rho = 1); rho = 6/7, 5/7, 4/7 become "
                        "round(PX x rho) (default 48: 48, 41, 34, 27)")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs per model, the same for all (default 7)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="training samples, and at most this many validation and test samples (default all)")
    p.add_argument("--table4-alpha", type=positive_float, default=None, metavar="A",
                   help="width of Table 4's pair, MobileNet and Conv MobileNet (default 0.5: Conv MobileNet at "
                        "alpha 1 trains about 6x slower on a CPU; the paper's is 1)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="peak learning rate for every model (default 0.05, for batch 64)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="images per step (default 64)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="default sgd (momentum 0.9); lars rescales each layer's step to its own size")
    p.add_argument("--no-sweep", action="store_true", help="skip the learning-rate sweep (half and twice the rate)")
    p.add_argument("--no-grid", action="store_true", help="skip the 9 grid points that no table needs")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="intra-op CPU threads (default: 1 when the machine is already busy, else torch's default)")
    p.add_argument("--rerender", action="store_true",
                   help="write the report in --out again from the run's saved numbers (JSON), judging the claims "
                        "again, without measuring or training")
    p.add_argument("--keep-runs", action="store_true", help="keep every run's checkpoints under DIR/runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..reproduce import ExperimentConfig, reproduce, rerender

    if args.rerender:
        print(f"report: {rerender(args.out)}")
        return 0

    overrides = {"progress": not args.no_progress, "keep_runs": args.keep_runs}
    for name in ("data", "base_resolution", "seeds", "epochs", "limit", "lr", "batch_size", "optimizer",
                 "table4_alpha", "device"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.no_sweep:
        overrides["lr_factors"] = ()
    if args.no_grid:
        overrides["grid"] = False
    cfg = ExperimentConfig.quick(**overrides) if args.quick else ExperimentConfig(**overrides)
    command = "mobilenet " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] \
        else "mobilenet reproduce"
    path = reproduce(args.out, cfg, quick=args.quick, speed_repeats=3 if args.quick else 20,
                     threads=args.threads, command=command)
    if path is not None:  # None in the torchrun processes that only train
        print(f"report: {path}")
    return 0
