"""Entry point: builds the parser from every command module and turns user errors into one line on stderr."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import MobileNetError

# Each module exposes ``register(subparsers)``; the parsers it adds set ``func`` to a callable taking the args.
COMMAND_MODULES = ["models", "train", "infer", "data", "deploy", "search", "convert", "reproduce", "serve"]

# Only the package's own error is a user mistake shown as one line; anything else is a bug and keeps its traceback.
USER_ERRORS = (MobileNetError,)


class _Parser(argparse.ArgumentParser):
    """Reports a usage mistake as one line on stderr (status 2) instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mobilenet",
        description="MobileNets V1/V2/V3 at any width (alpha) and resolution (rho): exact cost, training, "
                    "evaluation and deployment.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f".{name}", __package__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except USER_ERRORS as e:
        if os.environ.get("MOBILENET_DEBUG"):
            raise
        print(f"mobilenet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mobilenet {args.command}: interrupted", file=sys.stderr)
        return 130
