"""``mobilenet export``, ``quantize`` and ``bench``: thin layers over :mod:`mobilenet.deploy` and
:mod:`mobilenet.bench`."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from ..deploy.backends import BACKENDS as _BACKENDS
from ..deploy.backends import available_backends
from ..errors import MobileNetError
from .options import int_list, positive_float, positive_int


def _backend_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    bad = [n for n in names if n not in _BACKENDS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(_BACKENDS)}, got {text!r}")
    return names


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="NAME", nargs="?", help="registered model name (see `mobilenet list`); or "
                   "give --checkpoint")
    p.add_argument("--checkpoint", metavar="C", help="a checkpoint (or run directory) from `mobilenet train`; it "
                   "carries the architecture, class names and normalisation")
    p.add_argument("--weights", metavar="W", help="weights for NAME: torch.save(model.state_dict()) or .safetensors")
    p.add_argument("--alpha", type=positive_float, default=1.0, help="width multiplier alpha for NAME (default 1.0)")
    p.add_argument("--resolution", type=positive_int, default=None, help="input side for NAME (default 224)")
    p.add_argument("--num-classes", type=positive_int, default=1000, help="classifier outputs for NAME "
                   "(default 1000)")


def _load(args):
    from ..deploy import load_model
    if args.checkpoint is None and args.model is None:
        raise MobileNetError("give a model NAME or --checkpoint C")
    if args.checkpoint is not None:
        if args.model is not None or args.weights is not None:
            raise MobileNetError("give either --checkpoint or a model NAME (with optional --weights), not both")
        return load_model(checkpoint=args.checkpoint)
    kw = {"alpha": args.alpha, "num_classes": args.num_classes}
    if args.resolution is not None:
        kw["resolution"] = args.resolution
    return load_model(args.model, weights=args.weights, **kw)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a model to ONNX (BN folded) and prove it matches PyTorch",
        description="Fold batch norm, export to ONNX (input 'input' (B, C, H, W) with a dynamic batch axis, output "
                    "'logits'), store model name, alpha, resolution, class names and normalisation in the file's "
                    "metadata, run the ONNX checker and compare ONNX Runtime with PyTorch on real images. Fails "
                    "if any logit differs by more than 1e-4.",
    )
    _add_source(p)
    p.add_argument("--out", required=True, metavar="PATH", help="the .onnx file to write")
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset, >= 14 (default 17)")
    p.add_argument("--backend", choices=("onnxruntime", "auto"), default="onnxruntime",
                   help="onnxruntime: the fp32 file (default). auto: time the ONNX-file backends (ONNX Runtime "
                        "fp32 and int8, OpenVINO fp32 and bf16) on this machine at --batch and write the file the "
                        "fastest within --max-top1-drop runs (int8 and bf16 only with --checkpoint, whose "
                        "validation split measures their top-1 delta); the choice is stored in the metadata")
    p.add_argument("--batch", type=positive_int, default=1, help="for --backend auto: the batch size to time at "
                   "(default 1)")
    p.add_argument("--max-top1-drop", type=float, default=0.5, metavar="POINTS", help="for --backend auto: the "
                   "most top-1 (points) int8 or bf16 may lose against fp32 (default 0.5)")
    p.set_defaults(func=run_export)

    p = sub.add_parser(
        "quantize", help="int8 post-training quantization to an ONNX or TensorFlow Lite file, with its accuracy cost",
        description="Export (BN folded), calibrate activation ranges on images of DATA and write a static int8 "
                    "ONNX model (QDQ, uint8 activations, int8 per-channel weights; V3's hard-swish and SE gating "
                    "stay float if that runs faster here), or with a .tflite --out a TensorFlow Lite model with "
                    "every op int8. Prints top-1 of the "
                    "float and int8 models on DATA's validation split, their agreement, and the file sizes.",
    )
    _add_source(p)
    p.add_argument("--calib", required=True, metavar="DATA", help="calibration data: an embedded dataset "
                   "('patterns', 'shapes') or a folder (image folder, CIFAR, MNIST IDX); its training split is used")
    p.add_argument("--out", required=True, metavar="PATH", help="the int8 file to write: .onnx (ONNX Runtime, "
                   "OpenVINO), or .tflite (TensorFlow Lite: every op int8, run by XNNPACK; needs the litert extra)")
    p.add_argument("--calib-size", type=positive_int, default=300, help="calibration images (default 300)")
    p.add_argument("--val-size", type=positive_int, default=1000, help="validation images (default 1000)")
    p.set_defaults(func=run_quantize)

    p = sub.add_parser(
        "bench", help="latency/throughput per backend vs torch eager and this machine's GEMM peak",
        description="For each model x backend x batch: warm up, then the median latency over repeats, images/s, "
                    "achieved GMAC/s and its share of this machine's GEMM peak in the precision that ran (fp32, "
                    "bf16 or int8, each measured in the same run), and the speed-up over torch eager NCHW. For the "
                    "torch backends, the share of time in depthwise / pointwise / other layers next to their "
                    "share of Mult-Adds, and the pointwise layers' rate next to torch.mm on the same shapes. Writes "
                    "a CSV under results/ named by machine and versions.",
    )
    p.add_argument("models", metavar="NAME", nargs="*", help="models (default mobilenet_v1 mobilenet_v2)")
    p.add_argument("--batch", type=int_list, default=[1, 32], help="batch sizes, comma-separated (default 1,32)")
    p.add_argument("--backend", type=_backend_list, default=None,
                   help=f"backends, comma-separated, from {','.join(_BACKENDS)} (default: every installed one "
                        "but auto); torch eager always runs as the baseline")
    p.add_argument("--alpha", type=positive_float, default=None, help="width multiplier (default 1.0; quick 0.25)")
    p.add_argument("--resolution", type=positive_int, default=None, help="input side (default 224; quick 64)")
    p.add_argument("--repeats", type=positive_int, default=None, help="rounds of alternated blocks per "
                   "measurement (default 5; a block is about 0.25 s of calls of one backend)")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: small models, 3 repeats, torch-fast "
                   "without compilation; writes no CSV unless --csv is given")
    p.add_argument("--threads", type=positive_int, default=None, help="threads for every backend and the GEMM "
                   "peak (default: torch's current number); 1 is steadier on a shared machine")
    p.add_argument("--no-breakdown", action="store_true", help="skip the per-layer-kind profile")
    p.add_argument("--json", action="store_true", help="print one JSON object per measurement instead of tables")
    p.add_argument("--markdown", action="store_true", help="print the README's markdown table (ratios to torch "
                   "eager and to OpenVINO's best, %% of the matching GEMM peak, int8 vs fp32) instead of tables")
    p.add_argument("--csv", metavar="PATH", help="CSV path (default results/bench_<machine>_<versions>.csv); "
                   "rewritten after every model x batch, so a stopped run keeps what it measured")
    p.add_argument("--from-csv", metavar="PATH", action="append", default=None, help="measure nothing: print the "
                   "tables of CSVs written earlier (repeat to join runs, e.g. one per model)")
    p.set_defaults(func=run_bench)


def run_export(args: argparse.Namespace) -> int:
    from ..deploy import export_onnx
    model, info = _load(args)
    if args.backend == "auto":
        from ..deploy.auto import export_auto

        val, calib = _checkpoint_val(args.checkpoint) if args.checkpoint else (None, None)
        runner = export_auto(model, info, args.out, batch=args.batch, val=val, calib=calib,
                             max_top1_drop=args.max_top1_drop, opset=args.opset)
        print(f"backend auto at batch {args.batch}: {runner.backend} ({runner.precision}) wrote {args.out}; "
              + ", ".join(f"{b} {1e3 * t:.2f} ms" for b, t in runner.auto["seconds"].items()))
    else:
        print(export_onnx(model, args.out, info, opset=args.opset))
    print(f"{info.name} alpha={info.alpha:g} resolution={info.resolution} classes={info.num_classes}: "
          f"{os.path.getsize(args.out) / 1e6:.2f} MB")
    return 0


def _checkpoint_val(checkpoint: str):
    from ..train import load_checkpoint
    from .infer import _auto_val

    return _auto_val(load_checkpoint(checkpoint)[1])


def run_quantize(args: argparse.Namespace) -> int:
    import torch

    from ..data import load_data
    from ..deploy import export_onnx, make_runner
    from ..deploy.quantize import quantize_onnx

    model, info = _load(args)
    data = load_data(args.calib, resolution=info.resolution, in_chans=info.in_chans, augment="none",
                     limit=max(args.calib_size, args.val_size))
    calib = _stack(data.train, args.calib_size, data, info, "calibration")
    val = _stack(data.val, args.val_size, data, info, "validation")
    labels = torch.tensor([data.val[i][1] for i in range(len(val))])
    with tempfile.TemporaryDirectory(prefix="mobilenet-") as tmp:
        fp32_path = os.path.join(tmp, "fp32.onnx")
        print(export_onnx(model, fp32_path, info))
        fp32 = make_runner(None, "onnxruntime", onnx_path=fp32_path)
        if args.out.endswith(".tflite"):
            int8 = _quantize_tflite(fp32_path, os.path.join(tmp, "int8.onnx"), args.out, calib)
        else:
            quantize_onnx(fp32_path, args.out, calib)
            int8 = make_runner(None, "onnxruntime-int8", onnx_path=args.out)
        pred32 = torch.cat([fp32(val[i:i + 64]).argmax(1) for i in range(0, len(val), 64)])
        pred8 = torch.cat([int8(val[i:i + 64]).argmax(1) for i in range(0, len(val), 64)])
        size32, size8 = os.path.getsize(fp32_path), os.path.getsize(args.out)
    print(f"int8 model written to {args.out} (calibrated on {len(calib)} {data.name} training images)")
    print(f"validation: {len(val)} {data.name} images; int8 and fp32 agree on the top-1 class for "
          f"{100 * float((pred32 == pred8).float().mean()):.1f}%")
    if info.num_classes == data.num_classes:
        acc32 = 100 * float((pred32 == labels).float().mean())
        acc8 = 100 * float((pred8 == labels).float().mean())
        print(f"top-1 fp32 {acc32:.2f}%  int8 {acc8:.2f}%  delta {acc8 - acc32:+.2f} points")
    else:
        print(f"top-1 not measured: the model has {info.num_classes} classes, {data.name} has {data.num_classes}")
    print(f"file size fp32 {size32 / 1e6:.2f} MB, int8 {size8 / 1e6:.2f} MB, ratio {size32 / size8:.2f}x")
    return 0


def _quantize_tflite(fp32_path: str, qdq_path: str, out: str, calib):
    """Writes the TensorFlow Lite int8 model of ``fp32_path`` to ``out`` (through the all-int8 QDQ graph that the
    litert-int8 backend converts) and returns a function that runs it."""
    import onnx
    import torch

    from ..deploy.litert import compile_litert, to_tflite
    from ..deploy.quantize import quantize_onnx

    quantize_onnx(fp32_path, qdq_path, calib, keep_float=(), align=False)
    flatbuffer = to_tflite(onnx.load(qdq_path))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(flatbuffer)
    return compile_litert(flatbuffer, torch.get_num_threads())[0]


def _stack(dataset, n: int, data, info, what: str):
    """The first ``n`` images of a split as one batch, renormalised to the model's mean and std."""
    import torch
    from tqdm import tqdm

    n = min(n, len(dataset))
    if n == 0:
        raise MobileNetError(f"{data.name} has no {what} images")
    images = torch.stack([dataset[i][0] for i in tqdm(range(n), desc=f"{what} images", leave=False,
                                                       disable=not sys.stderr.isatty())])
    mean_d, std_d = (torch.tensor(v).reshape(1, -1, 1, 1) for v in (data.mean, data.std))
    mean_m, std_m = (torch.tensor(v).reshape(1, -1, 1, 1) for v in (info.mean, info.std))
    if mean_m.shape[1] != images.shape[1]:
        return images
    return (images * std_d + mean_d - mean_m) / std_m


def run_bench(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..bench import DEFAULT_MODELS
    from ..bench import run_bench as bench

    if args.from_csv:
        from ..bench.report import Report

        report = Report.read_csv(args.from_csv)
        print(report.json_lines() if args.json else report.markdown() if args.markdown else report.table())
        return 0
    bar = tqdm(desc="bench", leave=False, file=sys.stderr, disable=not sys.stderr.isatty())

    def progress(text: str) -> None:
        bar.set_description(text)
        bar.update()

    written: list[str] = []

    def save(report) -> None:  # after every model x batch: a stopped run keeps what it measured
        path = args.csv or (None if args.quick else os.path.join("results", report.csv_name()))
        if path:
            written[:] = [report.write_csv(path)]

    try:
        report = bench(args.models or DEFAULT_MODELS, args.batch, args.backend or available_backends(),
                       alpha=args.alpha, resolution=args.resolution, quick=args.quick, repeats=args.repeats,
                       breakdown=not args.no_breakdown, threads=args.threads, progress=progress, on_rows=save)
    finally:
        bar.close()
        if written:
            print(f"wrote {written[0]}", file=sys.stderr)
    print(report.json_lines() if args.json else report.markdown() if args.markdown else report.table())
    return 0
