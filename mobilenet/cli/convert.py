"""``mobilenet convert``: torchvision / timm / Keras weights into ours (safetensors with metadata), and back."""

from __future__ import annotations

import argparse
import textwrap

from ..convert import EXPORT_TARGETS, SOURCES, convert, export_weights, source_model
from ..download import file_sha256
from ..errors import MobileNetError
from ..models import create_model
from .options import positive_float, positive_int


def _three_floats(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers (R,G,B), got {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    names = "\n".join(textwrap.fill(f"{lib}: {', '.join(models)}", 100, initial_indent="  ",
                                     subsequent_indent="    ") for lib, models in SOURCES.items())
    p = sub.add_parser(
        "convert", help="convert torchvision/timm/Keras MobileNet weights to ours, or ours to torchvision/timm",
        description=textwrap.fill(
            "Convert another library's MobileNet weights into this package's layout (safetensors whose metadata "
            "records the source's padding, BN eps, activation and preprocessing, so that "
            "create_model(NAME, weights=OUT) reproduces the source's outputs), or convert our weights to "
            "torchvision's or timm's state-dict layout.", 100) + "\n\nsource models (--model):\n" + names,
        epilog="examples:\n"
               "  mobilenet convert mobilenet_v2-b0353104.pth --from torchvision --model mobilenet_v2 "
               "--out mnv2.safetensors\n"
               "  mobilenet convert mobilenet_7_5_224_tf.h5 --from keras --model MobileNet --out v1_075.safetensors\n"
               "  mobilenet convert mnv2.safetensors --to timm --model mobilenetv2_100 --out mobilenetv2_100.pth",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="input weights: a local file or an http(s) URL")
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from", dest="source", choices=sorted(SOURCES),
                           help="SRC is this library's weights; write ours")
    direction.add_argument("--to", dest="target", choices=EXPORT_TARGETS,
                           help="SRC is our weights (safetensors or checkpoint); write this library's layout")
    p.add_argument("--model", required=True, metavar="NAME",
                   help="the other library's model name, e.g. mobilenet_v2, mobilenetv1_100, MobileNetV2")
    p.add_argument("--out", required=True, metavar="OUT",
                   help="output file: .safetensors for ours; .pth (torch.save) or .safetensors for --to")
    p.add_argument("--alpha", type=positive_float, default=None,
                   help="width multiplier alpha of the source (default: inferred from its layer widths)")
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="input side the source was trained at, recorded in the metadata (default 224)")
    p.add_argument("--sha256", default=None, help="expected SHA-256 of SRC (64 hex digits); checked before use")
    p.add_argument("--keep-background", action="store_true",
                   help="keep a 1001-class classifier's background logit (default: drop it, leaving 1000)")
    p.add_argument("--mean", type=_three_floats, default=None, metavar="R,G,B",
                   help="override the recorded input mean (of an image in [0, 1])")
    p.add_argument("--std", type=_three_floats, default=None, metavar="R,G,B",
                   help="override the recorded input std")
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    if args.target:
        return _export(args)
    model, info = convert(args.src, args.source, args.model, args.out, alpha=args.alpha, resolution=args.resolution,
                          sha256=args.sha256, drop_background=not args.keep_background, mean=args.mean,
                          std=args.std)
    opts = info["options"]
    extra = ", ".join(f"{k}={v}" for k, v in opts.items() if k not in ("alpha", "num_classes", "resolution"))
    params = sum(p.numel() for p in model.parameters())
    dropped = " (background logit dropped)" if info["source"]["dropped_background_class"] else ""
    print(f"{args.source} {args.model} -> {info['model']} alpha {opts['alpha']:g}, {opts['num_classes']} "
          f"classes{dropped}, {params:,} params" + (f"; options: {extra}" if extra else ""))
    pre = info["preprocessing"]
    print(f"inputs: RGB in [0, 1], normalised with mean {pre['mean']} and std {pre['std']}")
    print(f"wrote {args.out} (sha256 {file_sha256(args.out)})")
    print(f"load it with: mobilenet.create_model({info['model']!r}, weights={str(args.out)!r})")
    return 0


def _export(args: argparse.Namespace) -> int:
    for flag in ("alpha", "resolution", "mean", "std"):
        if getattr(args, flag) is not None:
            raise MobileNetError(f"--{flag} is only used with --from (the weights' own metadata says it)")
    spec = source_model(args.target, args.model)
    model = create_model(spec.model, weights=args.src, weights_sha256=args.sha256)
    state = export_weights(model, args.target, args.model, args.out)
    params = sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var",
                                                                         "num_batches_tracked")))
    print(f"{spec.model} alpha {model.alpha:g} -> {args.target} {args.model}: {len(state)} tensors, "
          f"{params:,} params")
    print(f"wrote {args.out} (sha256 {file_sha256(args.out)})")
    return 0
