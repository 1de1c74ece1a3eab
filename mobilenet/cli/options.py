"""Argument parsing shared by every subcommand that builds a model, with checks that give one-line errors."""

from __future__ import annotations

import argparse
import re

from ..errors import MobileNetError

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9}


def positive_float(text: str) -> float:
    """An argparse type for a finite float > 0 (α, ρ)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type for an integer ≥ 1 (resolution, batch size, epochs, …)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def fraction(text: str) -> float:
    """An argparse type for a number in [0, 1) (dropout, momentum, label smoothing, EMA decay)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def non_negative(text: str) -> float:
    """An argparse type for a finite number >= 0 (weight decay, warm-up epochs)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def count(text: str) -> int:
    """An argparse type for an integer >= 0."""
    value = non_negative(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(value)


def int_list(text: str) -> list[int]:
    """An argparse type for a comma-separated list of integers ≥ 1, e.g. ``1,32``."""
    return [positive_int(part.strip()) for part in text.split(",") if part.strip()] or _empty(text)


def float_list(text: str) -> list[float]:
    """An argparse type for a comma-separated list of numbers > 0, e.g. ``0.25,0.5,1.0``."""
    return [positive_float(part.strip()) for part in text.split(",") if part.strip()] or _empty(text)


def _empty(text: str):
    raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")


def parse_amount(text: str) -> int:
    """Parses a budget such as ``150M``, ``2.5M``, ``300000`` or ``1G`` into an integer.

    Raises:
        MobileNetError: if the text is not a number with an optional K/M/G suffix.
    """
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([KMGB]?)\s*", str(text), flags=re.IGNORECASE)
    if not m:
        raise MobileNetError(f"expected an amount like 150M, 2.5M or 300000, got {text!r}")
    value = round(float(m.group(1)) * _SUFFIX[m.group(2).upper()])
    if value < 1 or value > 1e18:  # checked after rounding: 0.0001 is no budget at all
        raise MobileNetError(f"expected an amount of at least 1, got {text!r}")
    return int(value)


def amount(text: str) -> int:
    """``parse_amount`` as an argparse type."""
    try:
        return parse_amount(text)
    except MobileNetError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_model_options(p: argparse.ArgumentParser, positional: bool = True) -> None:
    """Adds NAME, --alpha, --resolution/--rho and --num-classes."""
    if positional:
        p.add_argument("model", metavar="NAME", help="registered model name (see `mobilenet list`)")
    p.add_argument("--alpha", type=positive_float, default=1.0,
                   help="width multiplier alpha: every layer's channels x alpha, cost ~ alpha^2 (default 1.0)")
    res = p.add_mutually_exclusive_group()
    res.add_argument("--resolution", type=positive_int, default=None,
                     help="input side in pixels (default 224)")
    res.add_argument("--rho", type=positive_float, default=None,
                     help="resolution multiplier rho: resolution = round(224 x rho), cost ~ rho^2")
    p.add_argument("--num-classes", type=positive_int, default=1000, help="classifier outputs (default 1000)")


def model_kwargs(args: argparse.Namespace) -> dict:
    """The ``create_model`` keyword arguments from options added by :func:`add_model_options`."""
    kw = {"alpha": args.alpha, "num_classes": args.num_classes}
    if args.resolution is not None:
        kw["resolution"] = args.resolution
    if args.rho is not None:
        kw["rho"] = args.rho
    return kw
