"""``mobilenet data``: look at the embedded datasets."""

from __future__ import annotations

import argparse

from .options import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    from ..data.load import EMBEDDED_DATASETS

    p = sub.add_parser("data", help="look at the embedded datasets (list, preview)",
                       description="List the embedded procedural datasets, or draw a contact sheet of one.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the embedded datasets, one line each").set_defaults(func=run_list)
    q = actions.add_parser("preview", help="a contact sheet: one row per class",
                           description="Write a PNG with PER_CLASS images of every class, a row per class, the "
                                       "class name at its left.")
    q.add_argument("name", choices=list(EMBEDDED_DATASETS), help="embedded dataset")
    q.add_argument("--out", required=True, metavar="PNG", help="the image to write")
    q.add_argument("--per-class", type=positive_int, default=8, metavar="N", help="images per class (default 8)")
    q.add_argument("--resolution", type=positive_int, default=64, metavar="PX",
                   help="side of each image as drawn (default 64)")
    q.add_argument("--split", choices=("train", "val", "test"), default="train", help="default train")
    q.add_argument("--scale", type=positive_int, default=1, help="enlarge each image this many times (default 1)")
    q.set_defaults(func=run_preview)


def run_list(args: argparse.Namespace) -> int:
    from ..data.load import EMBEDDED_DATASETS

    for name, text in EMBEDDED_DATASETS.items():
        print(f"{name:10s} {text}")
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from ..data.preview import contact_sheet

    path = contact_sheet(args.name, args.out, args.per_class, args.resolution, args.split, args.scale)
    print(f"wrote {path}")
    return 0
