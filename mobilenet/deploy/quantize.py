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
* Which ops stay float is measured, not assumed (:func:`quantize_onnx` times the candidates here): V3's hard-swish
  and squeeze-excite gating (``HardSwish``, ``HardSigmoid``, ``Mul``), where each int8 element-wise op costs a
  requantization that can outweigh what the int8 convolutions around it save, and the depthwise convolutions,
  whose int8 kernels do one multiply-add per output per tap and gain least from int8 dot-product instructions.
  One more candidate rewrites hard-swish as ``x * clip(x + 3, 0, 6) * 1/6`` before quantizing, so that each part
  runs as an int8 kernel, and then folds the ``* 1/6`` into the product's quantization scale (V3-Large on an AMX
  Xeon, batch 1 / 32: 2.60 / 62 ms, against 3.20 / 97 ms for all-int8 with hard-swish as a float island and
  2.66 / 79 ms for fp32).
* Channel counts padded onto ONNX Runtime's fast int8 kernels (:mod:`mobilenet.deploy.align`): V3's depthwise
  convolutions to a multiple of 16 channels, the first convolution's input to 4 channels. The outputs are
  unchanged; on a Zen 5 EPYC, V3-Large ran 14-16 % faster at batch 1 and 21-22 % at batch 32, V1 11-15 % at batch 1.

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
from .align import graph_index, pad_depthwise, pad_input_channels
from .onnx_io import INPUT_NAME

CALIB_BATCH = 16
# Channel multiples of ONNX Runtime's symmetric int8 kernels on x86 (MLAS): depthwise, and any other convolution's
# input channels.
DEPTHWISE_ALIGN, INPUT_ALIGN = 16, 4


class _Batches:
    """ONNX Runtime's CalibrationDataReader protocol over an (N, C, H, W) array, ``CALIB_BATCH`` at a time."""

    def __init__(self, images: np.ndarray, input_name: str):
        self._batches = iter([{input_name: images[i:i + CALIB_BATCH]} for i in range(0, len(images), CALIB_BATCH)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self):  # not needed for min/max calibration, part of the protocol
        pass


GATING = ("HardSwish", "HardSigmoid", "Mul")  # V3's activation and SE gating
DEPTHWISE = "depthwise"  # in ``keep_float``: every depthwise Conv node


def quantize_onnx(fp32_path: str, out_path: str, calib_images, per_channel: bool = True,
                  keep_float: tuple[str, ...] | None = None, split_hardswish: bool = False,
                  align: bool = True) -> str:
    """Writes a statically quantized int8 copy of ``fp32_path`` to ``out_path`` and returns ``out_path``.

    Args:
        fp32_path: a float ONNX model written by :func:`~mobilenet.deploy.export.export_onnx` (BN already folded).
        out_path: the int8 ``.onnx`` file to write; the float file's metadata is copied over.
        calib_images: normalised calibration images (N, C, H, W), numpy or tensor; a few hundred is plenty.
        per_channel: one weight scale per output channel (default; per-tensor loses accuracy on MobileNets).
        keep_float: op types to leave in float, and :data:`DEPTHWISE` for the depthwise convolutions. ``None``
            (default): the candidates (all int8; the gating ops float, where the graph has them; those and the
            depthwise convolutions float; hard-swish split, see below) are quantized and timed at batch 1 and 8,
            and the fastest is kept; ``()``: quantize all.
        split_hardswish: with an explicit ``keep_float``, rewrite every ``HardSwish`` as ``x * clip(x + 3, 0, 6) *
            1/6`` first (``Add``, ``Clip``, ``Mul``, ``Mul``): ONNX Runtime has int8 kernels for each of those
            (the ``Clip`` folds into its input's range) and none for hard-swish, which it otherwise runs as a
            dequantize, a float hard-sigmoid and multiply, and a quantize.
        align: pad channel counts to what ONNX Runtime's fast int8 kernels take (:mod:`~mobilenet.deploy.align`;
            the outputs do not change).

    Raises:
        MobileNetError: no calibration images or an unreadable model.
    """
    import onnx

    images = calib_images.detach().cpu().numpy() if isinstance(calib_images, torch.Tensor) else calib_images
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise MobileNetError(f"calibration needs a non-empty (N, C, H, W) batch, got shape {images.shape}")
    source = onnx.load(fp32_path)
    with tempfile.TemporaryDirectory(prefix="mobilenet-quant-") as tmp:
        widened = 0
        if align:
            source, widened = pad_depthwise(source, DEPTHWISE_ALIGN)
            if widened:
                fp32_path = os.path.join(tmp, "aligned.fp32.onnx")
                onnx.save(source, fp32_path)
        if keep_float is None:
            (keep_float, split_hardswish), quantized = _fastest_choice(source, fp32_path, images, per_channel, tmp)
        else:
            keep_float = keep_float or ()
            quantized = _quantize(source, fp32_path, images, per_channel, (keep_float, split_hardswish), tmp)
    if align:
        quantized, first = pad_input_channels(quantized, INPUT_ALIGN)
        widened += first
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(source.metadata_props)
    entry = quantized.metadata_props.add()
    floats = f"; {', '.join(keep_float)} in float" if keep_float else ""  # e.g. "HardSwish, depthwise in float"
    floats += "; hard-swish as int8 add and multiply" if split_hardswish else ""
    floats += "; channels padded for the int8 kernels" if widened else ""
    entry.key, entry.value = "mobilenet.precision", f"int8 (QDQ, U8 activations, S8 per-channel weights{floats})"
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    onnx.save(quantized, out_path)
    return out_path


def _quantize(source, fp32_path: str, images: np.ndarray, per_channel: bool, candidate, tmp: str):
    """The int8 graph of ``candidate`` = ``(keep_float, split_hardswish)``, written to :func:`_quantized_path`."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    keep_float, split = candidate
    if split:
        source = split_hardswish(source)
        fp32_path = os.path.join(tmp, "split-hardswish.fp32.onnx")
        onnx.save(source, fp32_path)
    path = _quantized_path(tmp, candidate)
    with _quiet_root_logger():
        # The calibrator writes an augmented copy of the model; keeping it in a private directory leaves the
        # working directory clean and lets concurrent runs coexist.
        quantize_static(
            fp32_path, path, _Batches(images, INPUT_NAME),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            per_channel=per_channel, reduce_range=False, calibrate_method=CalibrationMethod.MinMax,
            calibration_providers=["CPUExecutionProvider"],
            nodes_to_exclude=_excluded(source, keep_float),
            extra_options={"CalibTensorRangeSymmetric": False, "WeightSymmetric": True},
        )
    graph = onnx.load(path)
    if split:
        graph = _fold_sixth(graph)
        onnx.save(graph, path)  # what _fastest_choice times
    return graph


def _fold_sixth(graph):
    """Removes the int8 pass of each split hard-swish's ``* 1/6``: the product is quantized straight onto the
    output's grid with a scale six times the output's, so that dequantizing with the output's scale divides by 6."""
    from onnx import numpy_helper

    init, producer, consumers = graph_index(graph.graph)
    drop = []
    for node in graph.graph.node:
        if not node.name.endswith("_scale") or node.op_type != "Mul" or not node.name.startswith("hardswish"):
            continue
        dq = producer.get(node.input[0])
        q_in = producer.get(dq.input[0]) if dq is not None else None
        outs = consumers.get(node.output[0], [])
        if (dq is None or q_in is None or dq.op_type != "DequantizeLinear" or q_in.op_type != "QuantizeLinear"
                or len(outs) != 1 or outs[0].op_type != "QuantizeLinear" or len(consumers[dq.output[0]]) != 1
                or len(consumers[q_in.output[0]]) != 1):
            continue
        q_out = outs[0]
        scale = numpy_helper.to_array(init[q_out.input[1]]) * 6
        name = f"{node.name}_folded_scale"
        graph.graph.initializer.append(numpy_helper.from_array(scale.astype(np.float32), name))
        q_in.input[1], q_in.input[2] = name, q_out.input[2]
        for user in consumers.get(q_out.output[0], []):
            for i, x in enumerate(user.input):
                if x == q_out.output[0]:
                    user.input[i] = q_in.output[0]
        drop += [dq, node, q_out]
    dropped = {id(n) for n in drop}
    kept = [n for n in graph.graph.node if id(n) not in dropped]
    used = {x for n in kept for x in n.input} | {v.name for v in graph.graph.output}
    kept = [n for n in kept if n.op_type != "DequantizeLinear" or any(o in used for o in n.output)]
    del graph.graph.node[:]
    graph.graph.node.extend(kept)
    return graph


def _quantized_path(tmp: str, candidate) -> str:
    keep_float, split = candidate
    return os.path.join(tmp, f"int8-{'-'.join(keep_float) or 'all'}{'-split' if split else ''}.onnx")


def split_hardswish(graph):
    """A copy of the ONNX ``graph`` with every ``HardSwish`` written as ``x * clip(x + 3, 0, 6) * (1/6)``."""
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(graph)
    constants = {"three": 3.0, "zero": 0.0, "six": 6.0, "sixth": 1 / 6}
    out.graph.initializer.extend(numpy_helper.from_array(np.array(v, np.float32), f"hardswish_{k}")
                                 for k, v in constants.items())
    nodes = []
    for i, node in enumerate(out.graph.node):
        if node.op_type != "HardSwish":
            nodes.append(node)
            continue
        x, y, p = node.input[0], node.output[0], f"hardswish{i}"
        nodes += [helper.make_node("Add", [x, "hardswish_three"], [f"{p}_shift"], name=f"{p}_add"),
                  helper.make_node("Clip", [f"{p}_shift", "hardswish_zero", "hardswish_six"], [f"{p}_gate"],
                                   name=f"{p}_clip"),
                  helper.make_node("Mul", [x, f"{p}_gate"], [f"{p}_prod"], name=f"{p}_mul"),
                  helper.make_node("Mul", [f"{p}_prod", "hardswish_sixth"], [y], name=f"{p}_scale")]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _excluded(source, keep_float: tuple[str, ...]) -> list[str]:
    """Names of the nodes ``keep_float`` leaves in float."""
    weights = {t.name: tuple(t.dims) for t in source.graph.initializer}

    def depthwise(node) -> bool:  # one input channel per group, as many groups as output channels
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        dims = weights.get(node.input[1], ()) if len(node.input) > 1 else ()
        return node.op_type == "Conv" and group > 1 and len(dims) == 4 and dims[0] == group and dims[1] == 1

    return [n.name for n in source.graph.node
            if n.op_type in keep_float or (DEPTHWISE in keep_float and depthwise(n))]


def _candidates(source) -> list[tuple[tuple[str, ...], bool]]:
    """``(keep_float, split_hardswish)`` pairs worth timing on this graph: all int8; the gating ops it has float;
    those and the depthwise convolutions float; all int8 with hard-swish split into ops that have int8 kernels."""
    gating = tuple(op for op in GATING if any(n.op_type == op for n in source.graph.node))
    out = [((), False)] + ([(gating, False)] if gating else [])
    if _excluded(source, (DEPTHWISE,)):
        out.append(((*gating, DEPTHWISE), False))
    if any(n.op_type == "HardSwish" for n in source.graph.node):
        out.append(((), True))
    return out


def _fastest_choice(source, fp32_path: str, images: np.ndarray, per_channel: bool, tmp: str):
    """``(candidate, graph)``: of the :func:`_candidates`, the int8 graph that runs fastest here, at batch 1 and 8
    (per-image time summed over both, so latency and throughput count alike). Each candidate is ranked by the lower
    quartile of 75 calls in 15 alternated blocks: with the medians of 25 calls, a run right after torch work once
    kept a candidate 1.6x slower than the best, and on a busy shared machine one kept V3-Small's float-gating graph
    (0.86x its fp32 at batch 32) over the split hard-swish (1.23x)."""

    from ..timing import SETTLE, SETTLE_TIME, alternate
    from .onnx_io import ort_session

    candidates = _candidates(source)
    if len(candidates) == 1:
        return candidates[0], _quantize(source, fp32_path, images, per_channel, candidates[0], tmp)
    sessions, graphs = {}, {}
    for candidate in candidates:
        graphs[candidate] = _quantize(source, fp32_path, images, per_channel, candidate, tmp)
        sessions[candidate] = ort_session(_quantized_path(tmp, candidate))  # the file _quantize wrote
    total = dict.fromkeys(sessions, 0.0)
    for batch in (1, 8):
        x = {INPUT_NAME: np.resize(images, (batch, *images.shape[1:]))}
        timings = alternate({k: (lambda s=s, x=x: s.run(None, x)) for k, s in sessions.items()}, rounds=15,
                            block=5, settle=SETTLE, settle_time=SETTLE_TIME)
        for candidate, t in timings.items():
            total[candidate] += t.lower_quartile / batch
    best = min(total, key=total.__getitem__)
    return best, graphs[best]


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
