"""Where a model to deploy comes from: a registered name (fresh or with ``--weights``) or a training checkpoint.

Everything a deployed model needs besides its weights travels in :class:`ModelInfo`: the architecture knobs,
the class names and the input normalisation. The ONNX exporter writes it into the file's metadata, so a runtime
can check that a file belongs to the model it is meant for.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from torch import nn

from ..errors import MobileNetError
from ..models import create_model
from ..normalization import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class ModelInfo:
    """What a deployed model needs besides its weights.

    Attributes:
        name: registry name.
        alpha: width multiplier α.
        resolution: the input side the model is meant for.
        num_classes: classifier outputs.
        in_chans: input channels.
        class_names: one name per output (``class_0`` … when unknown).
        mean, std: per-channel normalisation of inputs in [0, 1].
    """

    name: str
    alpha: float
    resolution: int
    num_classes: int
    in_chans: int = 3
    class_names: list[str] = field(default_factory=list, repr=False)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self):
        if not self.class_names:
            self.class_names = [f"class_{i}" for i in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise MobileNetError(f"{len(self.class_names)} class names for a model with {self.num_classes} outputs")
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)

    def to_dict(self) -> dict:
        return asdict(self)


def model_info(model: nn.Module, class_names=None, mean=None, std=None) -> ModelInfo:
    """The :class:`ModelInfo` of a model built by ``create_model``, with optional labels and normalisation."""
    return ModelInfo(
        name=getattr(model, "name", type(model).__name__),
        alpha=float(getattr(model, "alpha", 1.0)),
        resolution=int(getattr(model, "resolution", 224)),
        num_classes=int(getattr(model, "num_classes", 0)),
        in_chans=int(getattr(model, "in_chans", 3)),
        class_names=list(class_names or []),
        mean=tuple(mean) if mean is not None else IMAGENET_MEAN,
        std=tuple(std) if std is not None else IMAGENET_STD,
    )


def load_model(name: str | None = None, *, checkpoint: str | None = None, weights: str | None = None,
               **kwargs) -> tuple[nn.Module, ModelInfo]:
    """Builds the model to deploy, in eval mode, and its :class:`ModelInfo`.

    Args:
        name: registered model name (with ``kwargs`` such as ``alpha``, ``resolution``, ``num_classes``).
        checkpoint: a checkpoint written by ``mobilenet train`` (a ``.pt`` file or a run directory) instead of
            ``name``; it carries the architecture, class names and normalisation.
        weights: a state dict for ``name``: a ``.safetensors`` file or a ``torch.save(model.state_dict())`` file
            (loaded by :mod:`mobilenet.weights` with ``weights_only=True``, never unpickling arbitrary objects).

    Raises:
        MobileNetError: a missing file, a file that is not a state dict, or weights of another architecture.
    """
    if checkpoint is not None:
        if name is not None or weights is not None:
            raise MobileNetError("give either a checkpoint or a model name (with optional weights), not both")
        return _load_checkpoint(checkpoint)
    if name is None:
        raise MobileNetError("give a model name or a checkpoint")
    try:
        model = create_model(name, weights=weights, **kwargs)  # weights: read safely by mobilenet.weights
    except ValueError as e:
        raise MobileNetError(str(e)) from None
    return model.eval(), model_info(model)


def _load_checkpoint(path: str) -> tuple[nn.Module, ModelInfo]:
    if not os.path.exists(path):
        raise MobileNetError(f"checkpoint {path!r} does not exist")
    from ..evaluate import load_checkpoint

    try:
        model, ckpt = load_checkpoint(path)
    except MobileNetError:
        raise
    except Exception as e:
        raise MobileNetError(f"cannot read checkpoint {path!r}: {type(e).__name__}: {e}") from None
    ckpt = ckpt if isinstance(ckpt, dict) else {}
    info = model_info(model, ckpt.get("class_names"), ckpt.get("mean"), ckpt.get("std"))
    return model.eval(), info
