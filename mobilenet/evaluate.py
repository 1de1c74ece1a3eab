"""Evaluating a model on a dataset (in one process or sharded under DDP), and loading a trained model back."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from . import distributed
from .checkpoint import read_checkpoint
from .errors import MobileNetError
from .models import create_model
from .statedict import load_strict


@torch.no_grad()
def evaluate(model, dataset, batch_size: int = 128, *, amp: bool = False, channels_last: bool = False,
             world: distributed.World | None = None, workers: int = 0, num_classes: int | None = None,
             device: str | torch.device | None = None) -> dict:
    """Top-1/top-5 accuracy, mean loss, per-class accuracy and the confusion matrix of ``model`` on ``dataset``.

    ``model`` is an ``nn.Module`` (put in eval mode for the pass) or any callable from an image batch to logits,
    such as a deploy backend's runner; ``num_classes`` is then needed unless it has a ``num_classes`` attribute.
    Batches go to ``device`` (default: the module's parameters' device, else the CPU). Under DDP (``world``) each
    rank evaluates every ``world.size``-th sample and the counts are summed, so the result is exact and the same on
    every rank.

    Returns:
        ``top1``, ``top5`` (percent; top-5 is top-k with k = min(5, classes)), ``loss``, ``count``,
        ``per_class`` (percent per class, None for a class without samples), ``confusion`` (rows: true class,
        columns: predicted).
    """
    if world is None:
        first = next(model.parameters(), None) if isinstance(model, nn.Module) else None
        device = torch.device(device) if device is not None else first.device if first is not None else None
        world = distributed.World(device=device or torch.device("cpu"))
    classes = num_classes or model.num_classes
    shard = Subset(dataset, range(world.rank, len(dataset), world.size)) if world.distributed else dataset
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    module = model if isinstance(model, nn.Module) else None
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    confusion = torch.zeros(classes, classes, dtype=torch.float64)
    extra = torch.zeros(2, dtype=torch.float64)  # top-k correct, loss sum
    k = min(5, classes)
    for x, y in loader:
        x = x.to(world.device, memory_format=fmt)
        with torch.autocast(world.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = torch.as_tensor(model(x))
        logits, y = logits.float().cpu(), y.cpu()
        confusion.index_put_((y, logits.argmax(1)), torch.ones(len(y), dtype=torch.float64), accumulate=True)
        extra[0] += (logits.topk(k, 1).indices == y[:, None]).any(1).sum()
        extra[1] += F.cross_entropy(logits, y, reduction="sum").double()
    if module is not None:
        module.train(was_training)
    totals = distributed.sum_tensor(torch.cat([confusion.flatten(), extra]), world)
    confusion = totals[:-2].view(classes, classes)
    count = float(confusion.sum())
    if count == 0:
        raise MobileNetError("the evaluation split is empty")
    rows = confusion.sum(1)
    return {
        "top1": float(100 * confusion.diag().sum() / count), "top5": float(100 * totals[-2] / count),
        "loss": float(totals[-1] / count), "count": int(count),
        "per_class": [float(100 * confusion[i, i] / rows[i]) if rows[i] else None for i in range(classes)],
        "confusion": confusion.long().tolist(),
    }


def load_checkpoint(path, model: nn.Module | None = None, use_ema: bool = True) -> tuple[nn.Module, dict]:
    """Rebuilds the trained model from a checkpoint (or loads the weights into ``model``), in eval mode.

    Args:
        path: a ``last.pt``/``best.pt`` file, or a run directory (its ``best.pt``, else ``last.pt``).
        model: load into this model instead of rebuilding the stored architecture; a model that does not fit
            raises one :class:`MobileNetError` listing every mismatched key and shape.
        use_ema: take the EMA weights when the run kept them.

    Returns:
        ``(model, checkpoint)``; the checkpoint dict has ``class_names``, ``mean``, ``std``, ``in_chans``,
        ``config``, ``metrics``, ``epoch``, ``step`` ...
    """
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").exists() else path / "last.pt"
    ckpt = read_checkpoint(path)
    if model is None:
        try:
            model = create_model(ckpt["config"]["model"], **ckpt["model_kwargs"])
        except MobileNetError:
            raise
        except (KeyError, TypeError, ValueError) as e:  # a damaged or foreign file: no usable architecture record
            raise MobileNetError(f"checkpoint {str(path)!r} does not record a model this version can build "
                                 f"({type(e).__name__}: {e})") from None
    weights = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    load_strict(model, weights)
    names = ckpt.get("class_names")
    if names is not None and len(names) != getattr(model, "num_classes", len(names)):
        raise MobileNetError(f"checkpoint {str(path)!r} names {len(names)} classes for a model with "
                             f"{model.num_classes} outputs")
    return model.eval(), ckpt


def plot_confusion(confusion: list[list[int]], class_names: list[str], path: str | Path, title: str = "") -> Path:
    """Saves a confusion matrix (rows: true class, columns: predicted) as a PNG, each row normalised to 1."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(confusion, dtype=float)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(class_names)
    side = max(4.0, 0.45 * n + 2)
    fig = Figure(figsize=(side + 1, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), class_names, rotation=90)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
