"""ONNX export with a proven result: checked by the ONNX checker and compared with PyTorch on real images.

The exported graph has one input ``input`` (B, C, H, W) float32 with a dynamic batch axis and one output
``logits`` (B, num_classes). BN is folded first (:func:`~mobilenet.deploy.fold.fold_bn`), so the file holds
conv-with-bias layers only. Opset 17 has single ``HardSwish``/``HardSigmoid`` ops (since opset 14), so
MobileNetV3's activations stay single nodes instead of decomposed arithmetic.

The TorchScript-based exporter (``dynamo=False``) is used: it handles every model here, needs no extra package
and exports in about a second; the graphs it writes are the ones the parity check has been run against.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..errors import MobileNetError
from .fold import fold_bn
from .images import sample_images
from .onnx_io import INPUT_NAME, OUTPUT_NAME, ort_session
from .source import ModelInfo, model_info

OPSET = 17
FP32_TOLERANCE = 1e-4
_META_PREFIX = "mobilenet."


@dataclass
class ExportResult:
    """What :func:`export_onnx` did: the file, and the parity check's worst logit difference."""

    path: str
    max_abs_diff: float
    num_images: int
    image_source: str
    batch_sizes: tuple[int, ...]

    def __str__(self) -> str:
        return (f"{self.path}: ONNX checker ok; max |logit difference| vs PyTorch = {self.max_abs_diff:.3g} "
                f"on {self.num_images} {self.image_source} images (batches {', '.join(map(str, self.batch_sizes))})")


def export_onnx(model: nn.Module, path: str, info: ModelInfo | None = None, *, opset: int = OPSET,
                images: torch.Tensor | None = None, num_images: int = 8, batch_sizes=(1, 8),
                tolerance: float = FP32_TOLERANCE) -> ExportResult:
    """Exports ``model`` (BN folded) to ONNX at ``path`` and proves the file computes the same logits.

    Args:
        model: a model from ``create_model`` or a checkpoint; it is not modified.
        path: the ``.onnx`` file to write.
        info: class names and normalisation to store in the metadata (default: from the model, ImageNet stats).
        opset: ONNX opset, ≥ 14 so hard-swish and hard-sigmoid are single ops.
        images: normalised (N, C, H, W) images for the parity check (default: :func:`sample_images`).
        num_images: how many default images to check.
        batch_sizes: batch sizes the check runs the file at (exercises the dynamic batch axis).
        tolerance: the largest accepted |logit difference| per unit of the largest |logit| (at least 1): float32
            round-off grows with the logits, and a trained model's reach 20 (1e-4 for float32).

    Raises:
        MobileNetError: when the checker rejects the graph or the logits differ by more than ``tolerance``.
    """
    import onnx

    if opset < 14:
        raise MobileNetError(f"opset {opset} has no HardSwish/HardSigmoid ops; use 14 or later")
    info = info or model_info(model)
    reference = model.eval()
    folded = fold_bn(model)
    example = torch.zeros(2, info.in_chans, info.resolution, info.resolution)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice: this exporter is chosen on purpose
        torch.onnx.export(
            folded, (example,), buffer, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    proto = _materialize_shared_initializers(onnx.load_from_string(buffer.getvalue()))
    proto.doc_string = f"{info.name} alpha={info.alpha} resolution={info.resolution}, exported by mobilenet"
    write_metadata(proto, info)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise MobileNetError(f"the ONNX checker rejected the export of {info.name}: {e}") from None
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    onnx.save(proto, path)

    source = "given"
    if images is None:
        images, source = sample_images(num_images, info.resolution, info.in_chans, info.mean, info.std)
    diff = parity(path, reference, images, batch_sizes)
    with torch.no_grad():
        scale = max(1.0, float(reference(images).abs().max()))
    if not diff <= tolerance * scale:
        raise MobileNetError(f"exported {path} disagrees with PyTorch: max |logit difference| {diff:.3g} > "
                             f"{tolerance * scale:.3g} ({tolerance:g} x the largest |logit|, {scale:.3g})")
    return ExportResult(path, diff, len(images), source, tuple(batch_sizes))


def parity(path: str, model: nn.Module, images: torch.Tensor, batch_sizes=(1, 8)) -> float:
    """The largest |logit difference| between an ONNX file (run by ONNX Runtime) and ``model`` in eval mode."""

    session = ort_session(path)
    with torch.no_grad():
        expected = model.eval()(images).numpy()
    worst = 0.0
    for batch in batch_sizes:
        for start in range(0, len(images), batch):
            x = images[start:start + batch].numpy()
            got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
            worst = max(worst, float(np.abs(got - expected[start:start + batch]).max()))
    return worst


def _materialize_shared_initializers(proto):
    """Gives every node its own copy of an initializer the exporter merged with an equal one.

    The exporter stores equal tensors once (e.g. the zero biases of a fresh model's folded convs of the same width)
    and feeds them through ``Identity`` nodes. Each conv owning its bias keeps the graph plain for the int8
    quantizer, which rewrites every conv's bias in place.
    """
    import onnx

    inits = {init.name: init for init in proto.graph.initializer}
    keep = []
    for node in proto.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            proto.graph.initializer.append(copy)
        else:
            keep.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    return proto


def write_metadata(proto, info: ModelInfo) -> None:
    """Stores ``info`` in the model's ``metadata_props`` (string key → string value, JSON for lists)."""
    values = {
        "model": info.name, "alpha": repr(info.alpha), "resolution": str(info.resolution),
        "num_classes": str(info.num_classes), "in_chans": str(info.in_chans),
        "class_names": json.dumps(info.class_names), "mean": json.dumps(list(info.mean)),
        "std": json.dumps(list(info.std)), "version": __version__,
    }
    del proto.metadata_props[:]
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = _META_PREFIX + key, value


def read_info(path: str) -> ModelInfo:
    """The :class:`ModelInfo` stored in an ONNX file written by :func:`export_onnx` (or quantized from one).

    Raises:
        MobileNetError: a missing or unreadable file, or one without mobilenet metadata.
    """
    import onnx

    if not os.path.isfile(path):
        raise MobileNetError(f"ONNX file {path!r} does not exist")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as e:
        raise MobileNetError(f"cannot read ONNX file {path!r}: {type(e).__name__}") from None
    # protobuf hands back bytes, not str, for entries that are not valid UTF-8
    def text(s):
        return s.decode("utf-8", "replace") if isinstance(s, bytes) else s

    meta = {text(p.key)[len(_META_PREFIX):]: text(p.value) for p in proto.metadata_props
            if text(p.key).startswith(_META_PREFIX)}
    try:
        info = ModelInfo(
            name=meta["model"], alpha=float(meta["alpha"]), resolution=int(meta["resolution"]),
            num_classes=int(meta["num_classes"]), in_chans=int(meta["in_chans"]),
            class_names=json.loads(meta["class_names"]), mean=json.loads(meta["mean"]), std=json.loads(meta["std"]),
        )
        if not (info.num_classes >= 1 and all(isinstance(n, str) for n in info.class_names)
                and len(info.mean) == len(info.std) == info.in_chans and all(s > 0 for s in info.std)):
            raise ValueError("class names, mean or std do not fit the outputs and input channels")
        return info
    except (KeyError, ValueError, TypeError) as e:  # TypeError: JSON of another shape, e.g. "mean": 5
        raise MobileNetError(f"{path!r} was not exported by `mobilenet export` (no valid model metadata: "
                             f"{type(e).__name__}: {e})") from None


def check_matches(path: str, info: ModelInfo) -> ModelInfo:
    """Raises a clear error when the ONNX file at ``path`` was exported from a different model than ``info``."""
    stored = read_info(path)
    mine = (info.name, info.alpha, info.num_classes, info.in_chans)
    theirs = (stored.name, stored.alpha, stored.num_classes, stored.in_chans)
    if mine != theirs:
        raise MobileNetError(
            f"{path!r} holds {stored.name} (alpha={stored.alpha}, {stored.num_classes} classes, "
            f"{stored.in_chans} channels), not {info.name} (alpha={info.alpha}, {info.num_classes} classes, "
            f"{info.in_chans} channels)")
    return stored
