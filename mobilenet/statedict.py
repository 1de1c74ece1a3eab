"""Strict state-dict loading with one readable error, shared by checkpoints, weight files and converters."""

from __future__ import annotations

import torch
from torch import nn

from .errors import MobileNetError

MAX_LISTED = 8  # offending keys named per kind of problem before "... and N more"


def list_problems(groups: list[tuple[str, list[str]]]) -> str:
    """``"N label: a; b ... and M more | ..."`` for every non-empty ``(label, keys)`` group."""
    parts = []
    for label, keys in groups:
        if keys:
            more = f"; ... and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
            parts.append(f"{len(keys)} {label}: {'; '.join(keys[:MAX_LISTED])}{more}")
    return " | ".join(parts)


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint") -> None:
    """``model.load_state_dict(state)`` when every key and shape fits; otherwise one error listing every
    missing, unexpected and wrong-shaped key with both shapes.

    BN's ``num_batches_tracked`` counters may be absent (older files and other libraries); they keep the
    model's value.

    Raises:
        MobileNetError: the state does not fit the model.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {what} {list(state[k].shape)} vs model {list(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = list_problems([("shape mismatches", shapes), (f"missing in the {what}", missing),
                              ("not in the model", unexpected)])
    if problems:
        name = getattr(model, "name", type(model).__name__)
        alpha = getattr(model, "alpha", None)
        raise MobileNetError(f"the {what} does not fit {name}" + (f" at alpha {alpha:g}" if alpha else "")
                             + f" (a different architecture, alpha or class count?): {problems}")
    model.load_state_dict({k: state.get(k, v) for k, v in own.items()})
