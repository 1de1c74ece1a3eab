"""Post-training static int8 quantization of an exported (BN-folded) ONNX model with ONNX Runtime.

The format is the one measured fastest on this kind of x86 CPU: QOperator (``QLinearConv``/``QLinearMatMul``
nodes rather than QuantizeLinear/DequantizeLinear pairs around float ops), unsigned 8-bit activations and signed
8-bit weights, with one weight scale per output channel. Per-channel weights matter for MobileNets: after BN
folding the depthwise filters' ranges differ by orders of magnitude between channels, and a single per-tensor scale
rounds the small ones to zero (the accuracy loss MobileNets are known for under naive int8). Activation ranges
come from min/max calibration over a few hundred representative images.
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


def quantize_onnx(fp32_path: str, out_path: str, calib_images, per_channel: bool = True) -> str:
    """Writes a statically quantized int8 copy of ``fp32_path`` to ``out_path`` and returns ``out_path``.

    Args:
        fp32_path: a float ONNX model written by :func:`~mobilenet.deploy.export.export_onnx` (BN already folded).
        out_path: the int8 ``.onnx`` file to write; the float file's metadata is copied over.
        calib_images: normalised calibration images (N, C, H, W), numpy or tensor; a few hundred is plenty.
        per_channel: one weight scale per output channel (default; per-tensor loses accuracy on MobileNets).

    Raises:
        MobileNetError: no calibration images or an unreadable model.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static


    images = calib_images.detach().cpu().numpy() if isinstance(calib_images, torch.Tensor) else calib_images
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise MobileNetError(f"calibration needs a non-empty (N, C, H, W) batch, got shape {images.shape}")
    source = onnx.load(fp32_path)
    with tempfile.TemporaryDirectory(prefix="mobilenet-quant-") as tmp, _quiet_root_logger():
        # The calibrator writes an augmented copy of the model; keeping it in a private directory leaves the
        # working directory clean and lets concurrent runs coexist.
        quantize_static(
            fp32_path, os.path.join(tmp, "int8.onnx"), _Batches(images, INPUT_NAME),
            quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            per_channel=per_channel, calibrate_method=CalibrationMethod.MinMax,
            calibration_providers=["CPUExecutionProvider"],
            extra_options={"CalibTensorRangeSymmetric": False, "WeightSymmetric": True},
        )
        quantized = onnx.load(os.path.join(tmp, "int8.onnx"))
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(source.metadata_props)
    entry = quantized.metadata_props.add()
    entry.key, entry.value = "mobilenet.precision", "int8 (QOperator, U8 activations, S8 per-channel weights)"
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    onnx.save(quantized, out_path)
    return out_path


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
