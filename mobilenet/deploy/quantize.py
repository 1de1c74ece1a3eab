"""Post-training static int8 quantization of an exported (BN-folded) ONNX model with ONNX Runtime.

The format was chosen by timing every combination ONNX Runtime offers on x86 CPUs with AVX512-VNNI (AMD Zen 4,
Intel Xeon), each model timed as if alone against its own fp32 (docs/int8.md has the numbers):

* QDQ (QuantizeLinear/DequantizeLinear pairs around float ops, fused by ONNX Runtime into int8 kernels) rather
  than QOperator (``QLinearConv`` nodes): as fast on V1/V2, faster on V3, and the one format OpenVINO and other
  runtimes also read.
* U8S8: unsigned 8-bit activations, signed 8-bit weights. VNNI's ``vpdpbusd`` multiplies u8 by s8, so S8S8 runs
  up to 2x slower; ``reduce_range`` (7-bit weights) only avoids an overflow of pre-VNNI instructions and gains
  nothing here.
* One weight scale per output channel: after BN folding the depthwise filters' ranges differ by orders of
  magnitude between channels, and a single per-tensor scale rounds the small ones to zero (the accuracy loss
  MobileNets are known for under naive int8).
* V3's hard-swish and squeeze-excite gating (``HardSwish``, ``HardSigmoid``, ``Mul``) either stay float or become
  int8, whichever of the two runs faster here (:func:`quantize_onnx` times both): each int8 element-wise op costs a
  requantization that can outweigh what the int8 convolutions around it save.

Activation ranges come from min/max calibration over a few hundred representative images.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile

import numpy as np
import torch

from ..errors import MobileNetError
from .onnx_io import INPUT_NAME

CALIB_BATCH = 16


class _Batches:
    """ONNX Runtime's CalibrationDataReader protocol over an (N, C, H, W) array, ``CALIB_BATCH`` at a time."""

    def __init__(self, images: np.ndarray, input_name: str):
        self._batches = iter([{input_name: images[i:i + CALIB_BATCH]} for i in range(0, len(images), CALIB_BATCH)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self):  # not needed for min/max calibration, part of the protocol
        pass


FLOAT_CANDIDATES = ("HardSwish", "HardSigmoid", "Mul")  # V3's activation and SE gating


def quantize_onnx(fp32_path: str, out_path: str, calib_images, per_channel: bool = True,
                  keep_float: tuple[str, ...] | None = None) -> str:
    """Writes a statically quantized int8 copy of ``fp32_path`` to ``out_path`` and returns ``out_path``.

    Args:
        fp32_path: a float ONNX model written by :func:`~mobilenet.deploy.export.export_onnx` (BN already folded).
        out_path: the int8 ``.onnx`` file to write; the float file's metadata is copied over.
        calib_images: normalised calibration images (N, C, H, W), numpy or tensor; a few hundred is plenty.
        per_channel: one weight scale per output channel (default; per-tensor loses accuracy on MobileNets).
        keep_float: op types to leave in float. ``None`` (default): for a graph with hard-swish or SE gating, both
            choices are quantized and timed at batch 1 and 8, and the faster one is kept; ``()``: quantize all.

    Raises:
        MobileNetError: no calibration images or an unreadable model.
    """
    import onnx

    images = calib_images.detach().cpu().numpy() if isinstance(calib_images, torch.Tensor) else calib_images
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise MobileNetError(f"calibration needs a non-empty (N, C, H, W) batch, got shape {images.shape}")
    source = onnx.load(fp32_path)
    present = tuple(op for op in FLOAT_CANDIDATES if any(n.op_type == op for n in source.graph.node))
    with tempfile.TemporaryDirectory(prefix="mobilenet-quant-") as tmp:
        if keep_float is None and present:
            keep_float, quantized = _faster_choice(source, fp32_path, images, per_channel, present, tmp)
        else:
            keep_float = keep_float or ()
            quantized = _quantize(source, fp32_path, images, per_channel, keep_float, tmp)
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(source.metadata_props)
    entry = quantized.metadata_props.add()
    floats = f"; {', '.join(keep_float)} in float" if keep_float else ""
    entry.key, entry.value = "mobilenet.precision", f"int8 (QDQ, U8 activations, S8 per-channel weights{floats})"
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    onnx.save(quantized, out_path)
    return out_path


def _quantize(source, fp32_path: str, images: np.ndarray, per_channel: bool, keep_float: tuple[str, ...], tmp: str):
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    path = os.path.join(tmp, f"int8-{len(keep_float)}.onnx")
    with _quiet_root_logger():
        # The calibrator writes an augmented copy of the model; keeping it in a private directory leaves the
        # working directory clean and lets concurrent runs coexist.
        quantize_static(
            fp32_path, path, _Batches(images, INPUT_NAME),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            per_channel=per_channel, reduce_range=False, calibrate_method=CalibrationMethod.MinMax,
            calibration_providers=["CPUExecutionProvider"],
            nodes_to_exclude=[n.name for n in source.graph.node if n.op_type in keep_float],
            extra_options={"CalibTensorRangeSymmetric": False, "WeightSymmetric": True},
        )
    return onnx.load(path)


def _faster_choice(source, fp32_path: str, images: np.ndarray, per_channel: bool, present: tuple[str, ...], tmp: str):
    """``(keep_float, graph)`` with ``keep_float`` ``present`` or ``()``: whichever int8 graph (those ops float, or
    all int8) runs faster here."""
    import onnx

    from ..timing import SETTLE, SETTLE_TIME, alternate
    from .onnx_io import ort_session

    sessions, graphs = {}, {}
    for keep in (present, ()):
        path = os.path.join(tmp, f"choice-{len(keep)}.onnx")
        graphs[keep] = _quantize(source, fp32_path, images, per_channel, keep, tmp)
        onnx.save(graphs[keep], path)
        sessions[keep] = ort_session(path)
    total = dict.fromkeys(sessions, 0.0)
    for batch in (1, 8):  # latency and throughput both count
        x = {INPUT_NAME: np.resize(images, (batch, *images.shape[1:]))}
        timings = alternate({k: (lambda s=s, x=x: s.run(None, x)) for k, s in sessions.items()}, rounds=3, block=3,
                            settle=SETTLE, settle_time=SETTLE_TIME)
        for keep, t in timings.items():
            total[keep] += t.median / batch
    keep = min(total, key=total.__getitem__)
    return keep, graphs[keep]


@contextlib.contextmanager
def _quiet_root_logger():
    # The quantizer logs advice about optional pre-processing on the root logger at WARNING level; the exported
    # graph is already shape-inferred and constant-folded, so the advice does not apply.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
