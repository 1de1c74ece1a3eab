"""``mobilenet eval`` and ``predict``: a trained checkpoint on a dataset or on image files, on any backend."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import MobileNetError
from .options import count, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="top-1/top-5 and per-class accuracy of a checkpoint",
                       description="Evaluate a checkpoint on a dataset's validation split (val/ in the ImageNet "
                                   "layout), at the checkpoint's resolution and normalisation.")
    p.add_argument("--checkpoint", required=True, metavar="C", help="a .pt checkpoint or a run directory")
    p.add_argument("--data", metavar="D", help="dataset (default: the one the checkpoint was trained on)")
    p.add_argument("--data-format", choices=["embedded", "imagefolder", "cifar", "idx"], help="default: detected")
    p.add_argument("--split", choices=["val", "test", "train"], default="val", help="default val")
    p.add_argument("--batch-size", type=positive_int, default=128, help="default 128")
    p.add_argument("--limit", type=positive_int, help="evaluate at most this many samples")
    p.add_argument("--workers", type=count, default=0, help="data-loading processes (default 0)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights even if the run kept an EMA")
    p.add_argument("--confusion", metavar="PNG", help="also save the confusion matrix as a PNG")
    _add_backend_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (top1, top5 in percent, ...)")
    p.set_defaults(func=run_eval)

    p = sub.add_parser("predict", help="top-k classes of image files", description="Classify image files with a "
                       "checkpoint: resize, centre crop, normalise as in training, and print the top-k classes.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    p.add_argument("--checkpoint", required=True, metavar="C", help="a .pt checkpoint or a run directory")
    p.add_argument("--top-k", type=positive_int, default=5, help="default 5")
    _add_backend_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_predict)


def _add_backend_option(p: argparse.ArgumentParser) -> None:
    from ..deploy.backends import BACKENDS

    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="inference backend: PyTorch eager, torch-fast (folded BN, channels_last, compiled), "
                        "torch-bf16, torch-int8, ONNX Runtime fp32 or int8, OpenVINO fp32, bf16 or int8, or auto: the "
                        "fastest on this machine within --max-top1-drop, timed once and cached (default torch)")
    p.add_argument("--max-top1-drop", type=float, default=0.5, metavar="POINTS",
                   help="for --backend auto: the most top-1 (percentage points) a bf16 or int8 backend may lose "
                        "against fp32 on the checkpoint's validation split (default 0.5)")


def _on_backend(model, args: argparse.Namespace, ckpt: dict, batch: int):
    """``model`` itself for eager PyTorch, else the deploy backend's runner (a callable from batch to logits)."""
    if args.backend == "torch":
        return model
    from ..deploy.backends import make_runner

    val, calib = _auto_val(ckpt) if args.backend == "auto" else (None, None)
    runner = make_runner(model, args.backend, batch=batch, val=val, calib=calib, max_top1_drop=args.max_top1_drop)
    if args.backend == "auto":
        print(f"backend auto: {runner.backend} ({runner.precision}); {runner.note}", file=sys.stderr)
    return runner


def _auto_val(ckpt: dict, limit: int = 500, calib_size: int = 300):
    """``((images, labels), calibration images)`` from the checkpoint's own data: up to ``limit`` validation images
    to measure top-1 deltas on, and ``calib_size`` training images to calibrate int8 on; ``(None, None)`` when the
    data is not here."""
    import torch

    from ..data import load_data

    cfg = ckpt["config"]
    try:
        bundle = load_data(cfg["data"], data_format=cfg.get("data_format"),
                           resolution=ckpt["model_kwargs"]["resolution"], in_chans=ckpt["in_chans"],
                           seed=cfg.get("seed", 0), val_fraction=cfg.get("val_fraction", 0.1), augment="none",
                           limit=max(limit, calib_size))
    except (MobileNetError, OSError):
        return None, None  # the training data is not here: only float backends are candidates
    if bundle.val is None or len(bundle.val) == 0:
        return None, None
    n = min(limit, len(bundle.val))
    images = torch.stack([bundle.val[i][0] for i in range(n)])
    calib = torch.stack([bundle.train[i][0] for i in range(min(calib_size, len(bundle.train)))])
    return (images, torch.tensor([bundle.val[i][1] for i in range(n)])), calib


def _eval_data(args: argparse.Namespace, ckpt: dict):
    from ..data import load_data

    cfg = ckpt["config"]
    spec = args.data or cfg["data"]
    fmt = args.data_format or (None if args.data else cfg.get("data_format"))
    bundle = load_data(spec, data_format=fmt, resolution=ckpt["model_kwargs"]["resolution"],
                       in_chans=ckpt["in_chans"], seed=cfg.get("seed", 0), val_fraction=cfg.get("val_fraction", 0.1),
                       augment="none", limit=args.limit)
    if len(bundle.class_names) != len(ckpt["class_names"]):
        raise MobileNetError(f"{spec} has {len(bundle.class_names)} classes but the checkpoint was trained on "
                             f"{len(ckpt['class_names'])}")
    if list(bundle.class_names) != list(ckpt["class_names"]):
        print(f"warning: {spec}'s class names differ from the checkpoint's; labels are matched by index",
              file=sys.stderr)
    split = {"val": bundle.val, "test": bundle.test, "train": bundle.train}[args.split]
    if split is None:
        raise MobileNetError(f"{spec} has no {args.split} split")
    return spec, split


def run_eval(args: argparse.Namespace) -> int:
    from ..evaluate import plot_confusion
    from ..train import evaluate, load_checkpoint

    model, ckpt = load_checkpoint(args.checkpoint, use_ema=not args.no_ema)
    spec, dataset = _eval_data(args, ckpt)
    runner = _on_backend(model, args, ckpt, args.batch_size)
    metrics = evaluate(runner, dataset, args.batch_size, workers=args.workers,
                       num_classes=model.num_classes)
    names = ckpt["class_names"]
    if args.confusion:
        plot_confusion(metrics["confusion"], names, args.confusion, f"{spec} ({args.split}): top-1 "
                       f"{metrics['top1']:.1f}%")
    if args.json:
        out = {"checkpoint": str(args.checkpoint), "data": spec, "split": args.split, "top1": metrics["top1"],
               "top5": metrics["top5"], "loss": metrics["loss"], "count": metrics["count"],
               "per_class": dict(zip(names, metrics["per_class"])), "confusion": metrics["confusion"]}
        print(json.dumps(out))
        return 0
    print(f"{spec} ({args.split}, {metrics['count']} images): top-1 {metrics['top1']:.2f}%  top-5 "
          f"{metrics['top5']:.2f}%  loss {metrics['loss']:.4f}")
    width = max(len(n) for n in names)
    for name, acc in zip(names, metrics["per_class"]):
        print(f"  {name:<{width}}  {'-' if acc is None else f'{acc:6.2f}%'}")
    if args.confusion:
        print(f"confusion matrix: {args.confusion}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import torch

    from ..data import load_image
    from ..train import load_checkpoint

    model, ckpt = load_checkpoint(args.checkpoint)
    model = _on_backend(model, args, ckpt, 1)
    names, res = ckpt["class_names"], ckpt["model_kwargs"]["resolution"]
    k = min(args.top_k, len(names))
    results = []
    for path in args.images:
        x = load_image(path, res, ckpt["mean"], ckpt["std"], ckpt["in_chans"])
        with torch.no_grad():
            probs = torch.as_tensor(model(x[None])).float().softmax(1)[0]
        top = probs.topk(k)
        results.append({"image": path, "predictions": [{"class": names[i], "index": int(i), "prob": float(p)}
                                                       for p, i in zip(top.values, top.indices)]})
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "results": results}))
        return 0
    for r in results:
        print(f"{r['image']}: " + ", ".join(f"{p['class']} {p['prob']:.3f}" for p in r["predictions"]))
    return 0
