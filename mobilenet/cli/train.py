"""``mobilenet train`` and ``bench-train``: thin layers over :mod:`mobilenet.train` and :mod:`mobilenet.bench_train`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

from ..errors import MobileNetError
from ..optim import OPTIMIZERS, SCHEDULES
from ..train import TrainConfig
from .options import count, fraction, non_negative, positive_float, positive_int

DEFAULTS = TrainConfig()


def _add_train_options(p: argparse.ArgumentParser) -> None:
    # Defaults are SUPPRESSed so that a resumed run can tell the options given on this command line from the
    # stored ones; the shown defaults come from TrainConfig.
    S = argparse.SUPPRESS
    g = p.add_argument_group("model")
    g.add_argument("--model", default=S, metavar="NAME", help=f"registered model (default {DEFAULTS.model}; see "
                   "`mobilenet list`)")
    g.add_argument("--alpha", type=positive_float, default=S,
                   help=f"width multiplier alpha: channels x alpha, cost ~ alpha^2 (default {DEFAULTS.alpha})")
    g.add_argument("--resolution", type=positive_int, default=S,
                   help=f"input side in pixels, rho x 224 (default {DEFAULTS.resolution})")
    g.add_argument("--dropout", type=fraction, default=S, help="dropout before the classifier (default: the "
                   "model's own, 0 for V1, 0.2 for V2/V3)")
    g = p.add_argument_group("data")
    g.add_argument("--data", default=S, metavar="D", help=f"embedded dataset name, or a folder: class "
                   f"sub-folders, ImageNet layout (train/ val/), CIFAR-10/100 python batches, or MNIST IDX files "
                   f"(default {DEFAULTS.data})")
    g.add_argument("--data-format", choices=["embedded", "imagefolder", "cifar", "idx"], default=S,
                   help="the format of --data (default: detected)")
    g.add_argument("--in-chans", type=int, choices=[1, 3], default=S,
                   help="input channels: 3 (grayscale is repeated) or 1 (default 3)")
    g.add_argument("--augment", choices=["standard", "light", "none"], default=S,
                   help=f"training augmentation: random-resized crop + flip, a lighter crop (the V1 paper's choice "
                   f"for small models), or none (default {DEFAULTS.augment})")
    g.add_argument("--limit", type=positive_int, default=S, help="use at most this many train and val samples")
    g.add_argument("--val-fraction", type=fraction, default=S,
                   help=f"share held out for validation from a plain class folder (default {DEFAULTS.val_fraction})")
    g.add_argument("--workers", type=count, default=S, help=f"data-loading processes (default {DEFAULTS.workers})")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int, default=S, help=f"passes over the data (default {DEFAULTS.epochs})")
    g.add_argument("--batch-size", type=positive_int, default=S,
                   help=f"global batch, split over the torchrun processes (default {DEFAULTS.batch_size})")
    g.add_argument("--lr", type=positive_float, default=S, help=f"peak learning rate (default {DEFAULTS.lr})")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=S,
                   help=f"SGD with momentum, RMSprop as in the papers, AdamW, or LARS (SGD with every layer's step "
                        f"scaled to its own size) (default {DEFAULTS.optimizer})")
    g.add_argument("--momentum", type=fraction, default=S, help=f"(default {DEFAULTS.momentum})")
    g.add_argument("--weight-decay", type=non_negative, default=S,
                   help=f"L2 on conv/linear weights; never on depthwise filters, norms, biases unless --decay-all "
                   f"(default {DEFAULTS.weight_decay})")
    g.add_argument("--decay-all", action="store_true", default=S, help="apply weight decay to every parameter")
    g.add_argument("--schedule", choices=SCHEDULES, default=S, help=f"after warm-up (default {DEFAULTS.schedule})")
    g.add_argument("--warmup-epochs", type=non_negative, default=S,
                   help=f"linear warm-up length (default {DEFAULTS.warmup_epochs})")
    g.add_argument("--step-epochs", type=positive_int, default=S,
                   help=f"step schedule: the rate x --gamma every this many epochs (default {DEFAULTS.step_epochs})")
    g.add_argument("--gamma", type=positive_float, default=S, help=f"step schedule factor (default {DEFAULTS.gamma})")
    g.add_argument("--label-smoothing", type=fraction, default=S, help=f"(default {DEFAULTS.label_smoothing})")
    g.add_argument("--ema", type=fraction, default=S,
                   help="keep an exponential moving average of the weights with this decay, e.g. 0.999, and "
                   "evaluate it (default 0: off)")
    g = p.add_argument_group("speed and reproducibility")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=S,
                   help="bf16 autocast for the forward pass (default: on at resolution >= 128, where it is faster "
                   "on the CPU)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=S,
                   help="NHWC memory format (default on)")
    g.add_argument("--seed", type=int, default=S, help=f"seeds data order, augmentation, weights and dropout; a "
                   f"CPU run is exactly reproducible (default {DEFAULTS.seed})")
    g.add_argument("--device", choices=["cpu", "cuda"], default=S, help="default: cuda when available")
    g.add_argument("--sync-bn", action="store_true", default=S, help="SyncBatchNorm across processes (CUDA DDP)")
    g = p.add_argument_group("output and checkpoints")
    g.add_argument("--output", metavar="DIR", default=S,
                   help="run directory for checkpoints, logs, config and plot (default runs/<model>-<time>)")
    g.add_argument("--resume", nargs="?", const="auto", metavar="CKPT", default=S,
                   help="continue a run exactly from a checkpoint or run directory (bare --resume: --output's "
                   "last.pt); only --epochs and speed/output options may change")
    g.add_argument("--checkpoint-every", type=count, default=S,
                   help="also save last.pt every N steps (default 0: at the end of each epoch only)")
    g.add_argument("--max-steps", type=positive_int, default=S,
                   help="stop after this many steps in all (saving last.pt); the schedule still spans --epochs")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=S, help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model (default: MobileNetV1 0.5 at 64 px on the embedded patterns data, ~4 min)",
        description="Train any registered model at any width (alpha) and resolution on the embedded dataset or "
                    "data on disk, evaluating on the validation split after every epoch. The run directory gets "
                    "last.pt and best.pt (atomic, resumable), config.json, log.jsonl/log.csv, steps.jsonl and "
                    "curves.png. Ctrl-C saves last.pt and exits; --resume continues exactly. Under torchrun "
                    "(torchrun --nproc_per_node=N -m mobilenet train ...) it trains data-parallel.",
    )
    _add_train_options(p)
    p.set_defaults(func=run_train)

    p = sub.add_parser("bench-train", help="training images/s: bf16 + channels_last vs eager fp32 NCHW",
                       description="Time training steps of one model with the default fast path (bf16 autocast + "
                                   "channels_last) and with plain eager NCHW fp32, interleaved in one run, and "
                                   "print images/s and the ratio. --convergence also trains on the embedded "
                                   "data with and without the fast path and compares the accuracy.")
    p.add_argument("model", nargs="?", default="mobilenet_v2", metavar="NAME", help="default mobilenet_v2")
    p.add_argument("--alpha", type=positive_float, default=1.0, help="default 1.0")
    p.add_argument("--resolution", type=positive_int, default=224, help="default 224")
    p.add_argument("--batch-size", type=positive_int, default=32, help="default 32")
    p.add_argument("--steps", type=positive_int, default=5, help="timed steps per round (default 5)")
    p.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds, median kept (default 3)")
    p.add_argument("--warmup", type=count, default=2, help="untimed steps per variant (default 2)")
    p.add_argument("--all-variants", action="store_true",
                   help="also time fp32 + channels_last and bf16 NCHW, to see what each change contributes")
    p.add_argument("--convergence", type=positive_int, metavar="EPOCHS",
                   help="also train the default demo model this many epochs with and without the fast path")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_bench_train)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The config from the options given; with --resume, the checkpoint's config updated by those options."""
    names = {f.name for f in fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names}
    if "resume" not in given:
        return TrainConfig(**given)
    from ..train import read_resume

    ckpt, path = read_resume(TrainConfig(output=given.get("output"), resume=given["resume"]))
    if ckpt is None:  # killed before its first checkpoint: the same run again, from its config.json
        stored = _run_config(path.parent)
        return TrainConfig.from_dict({**stored, **given, "output": str(path.parent), "resume": "auto"})
    stored = ckpt["config"]
    stored.pop("max_steps", None)  # a stop point belongs to the command that set it, not to the run
    return TrainConfig.from_dict({**stored, **given, "resume": str(path)})


def _run_config(run: Path) -> dict:
    """The options a run was started with, from its config.json ({} when it stopped before writing one)."""
    try:
        stored = json.loads((run / "config.json").read_text())
    except FileNotFoundError:
        print(f"warning: {run} holds no checkpoint and no config.json; starting the run from the beginning with "
              f"the options given", file=sys.stderr)
        return {}
    except (OSError, ValueError) as e:
        raise MobileNetError(f"nothing to resume in {str(run)!r}: no last.pt, and config.json is unreadable "
                             f"({e})") from None
    if not isinstance(stored, dict):
        raise MobileNetError(f"{str(run / 'config.json')!r} is not a run configuration")
    print(f"warning: {run} holds no checkpoint yet; starting the run again from step 0", file=sys.stderr)
    return {k: v for k, v in stored.items() if k not in ("max_steps", "resume")}


def run_train(args: argparse.Namespace) -> int:
    from ..train import train

    cfg = train_config(args)
    result = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    if args.json:
        print(json.dumps(result))
        return 130 if result["interrupted"] else 0
    res = cfg.resolution or 224
    print(f"{cfg.model} alpha={cfg.alpha} resolution={res}: {result['mult_adds'] / 1e6:.1f}M Mult-Adds, "
          f"{result['params'] / 1e6:.3f}M params")
    if result["interrupted"] or result["epochs_done"] < cfg.epochs:
        why = "interrupted" if result["interrupted"] else "stopped at --max-steps"
        print(f"{why} at step {result['steps']}; saved {result['last']}")
        print(f"continue with: mobilenet train --resume {result['output']}")
        return 130 if result["interrupted"] else 0
    print(f"val top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  (best top-1 {result['best_top1']:.2f}%, "
          f"{result['epochs_done']} epochs, {result['steps']} steps, {result['seconds']:.0f} s)")
    if "test" in result:
        print(f"test top-1 {result['test']['top1']:.2f}%  top-5 {result['test']['top5']:.2f}%")
    out = Path(result["output"])
    print(f"run: {out}/ (best.pt, last.pt, config.json, log.jsonl, log.csv, curves.png)")
    return 0


def run_bench_train(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..bench_train import BASELINE, DEFAULT_PATH, VARIANTS, bench_train

    variants = list(VARIANTS) if args.all_variants else [BASELINE, DEFAULT_PATH]
    total = len(variants) * (args.warmup + args.rounds * args.steps)
    with tqdm(total=total, desc="bench-train", unit="step", leave=False, disable=args.json) as bar:
        rows = bench_train(args.model, args.alpha, args.resolution, args.batch_size, args.steps, args.rounds,
                           args.warmup, variants, progress=bar.update)
    base = next(r.images_per_s for r in rows if r.variant == BASELINE)
    fast = next(r.images_per_s for r in rows if r.variant == DEFAULT_PATH)
    out = {"model": args.model, "alpha": args.alpha, "resolution": args.resolution, "batch": args.batch_size,
           "variants": [{"variant": r.variant, "images_per_s": r.images_per_s, "ratio": r.images_per_s / base,
                         "rounds": r.rounds} for r in rows],
           "ratio": fast / base}
    if not args.json:
        print(f"training {args.model} alpha={args.alpha} at {args.resolution}, batch {args.batch_size} (CPU, "
              f"median of {args.rounds} interleaved rounds of {args.steps} steps)")
        for r in rows:
            print(f"  {r.variant:<22} {r.images_per_s:8.1f} img/s  {r.images_per_s / base:5.2f}x")
        print(f"default path ({DEFAULT_PATH}) vs {BASELINE}: {fast / base:.2f}x")
    if args.convergence:
        from ..bench_train import convergence

        out["convergence"] = found = convergence(args.convergence, progress=not args.json)
        if not args.json:
            print(f"convergence ({DEFAULTS.model} alpha={DEFAULTS.alpha} at {DEFAULTS.resolution}, "
                  f"{args.convergence} epochs, same seed): val top-1 {found['fast']['top1']:.2f}% with bf16 + "
                  f"channels_last vs {found['eager']['top1']:.2f}% eager fp32 ({found['difference']:+.2f} points; "
                  f"{found['fast']['seconds']:.0f} s vs {found['eager']['seconds']:.0f} s)")
    if args.json:
        print(json.dumps(out))
    return 0
