"""The float32 ONNX graph of :func:`~mobilenet.deploy.export.export_onnx` (BN folded) as a TensorFlow Lite model: the
``litert`` backend, XNNPACK's float kernels, and the baseline that ``litert-int8`` is held against.

One ONNX op becomes one operator, NHWC, with the activations fused where TensorFlow Lite can: a ``Relu`` or
``Clip(0, 6)`` that alone reads a convolution becomes that convolution's fused ``RELU``/``RELU6``, and the
squeeze-excite's ``HardSigmoid`` (``clip(alpha * z + beta, 0, 1)``, which TensorFlow Lite lacks) becomes a convolution
scaled by ``6 * alpha`` with a fused ``RELU6``, times 1/6.
"""

from __future__ import annotations

import numpy as np

from ..errors import MobileNetError
from .align import graph_index
from .onnx_io import INPUT_NAME, OUTPUT_NAME
from .tflite_writer import Writer, check_plain_gemm, conv_geometry

_RELU6 = (0.0, 6.0)


def fp32_to_tflite(graph) -> bytes:
    """The ``.tflite`` flatbuffer of a float ONNX model (``onnx.ModelProto``): input ``input`` float32 (N, C, H, W)
    with N = 1 (resize it at run time), output ``logits`` float32 (N, classes).

    Raises:
        MobileNetError: the graph has an op without a conversion (e.g. V4-Hybrid's attention).
    """
    return _FloatConverter(graph).run()


class _FloatConverter:
    def __init__(self, graph):
        from onnx import numpy_helper

        self.w = Writer()
        self.graph = graph.graph
        weights, _, self.consumers = graph_index(self.graph)
        self.init = {name: numpy_helper.to_array(t) for name, t in weights.items()}
        self.init.update((n.output[0], numpy_helper.to_array(n.attribute[0].t)) for n in self.graph.node
                         if n.op_type == "Constant")  # a Clip's bounds
        self.fused: set[str] = set()  # activation nodes folded into the convolution before them

    def run(self) -> bytes:
        import onnx

        w = self.w
        dims = [d.dim_value or 1 for d in self.graph.input[0].type.tensor_type.shape.dim]
        x, nhwc = w.nchw_input(INPUT_NAME, [1, *dims[1:]])
        w.index[INPUT_NAME] = nhwc
        for node in self.graph.node:
            if node.op_type == "Constant" or node.name in self.fused:
                continue
            handler = getattr(self, f"_{node.op_type.lower()}", None)
            if handler is None:
                raise MobileNetError(f"LiteRT conversion: {node.op_type} ({node.name}) has no equivalent here")
            handler(node, {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute})
        last = w.index[OUTPUT_NAME + "_nhwc"]
        classes = w.shape(last)[-1]
        shape = w.tensor(f"{OUTPUT_NAME}_shape", [2], np.int32, data=np.array([-1, classes], np.int32))
        y = w.tensor(OUTPUT_NAME, [1, classes], np.float32)
        w.op("RESHAPE", [last, shape], [y])
        return w.finish([x], [y], "mobilenet fp32 (ONNX graph converted)")

    def _name(self, onnx_name: str) -> str:  # the graph output stays free for the final (N, classes) tensor
        return onnx_name + "_nhwc" if onnx_name == OUTPUT_NAME else onnx_name

    def _in(self, name: str, node) -> int:
        """The tensor an earlier operator wrote for ``name``, an input of ``node``."""
        if self._name(name) not in self.w.index:  # a constant operand, say: none of the converted ops takes one
            raise MobileNetError(f"LiteRT conversion: {node.op_type} ({node.name}) reads {name!r}, which is not an "
                                 "activation")
        return self.w.index[self._name(name)]

    def _activation_after(self, node):
        """``(activation, reader)``: the ``Relu``/``Clip(0, 6)``/``HardSigmoid`` that alone reads ``node``'s output
        (then fused into it), or ``("NONE", None)``."""
        readers = self.consumers.get(node.output[0], [])
        if len(readers) != 1:
            return "NONE", None
        r = readers[0]
        if r.op_type == "Relu":
            return "RELU", r
        if r.op_type == "Clip" and self._bounds(r) == _RELU6:
            return "RELU6", r
        if r.op_type == "HardSigmoid":
            return "HARD_SIGMOID", r
        return "NONE", None

    def _bounds(self, clip) -> tuple[float, float]:
        lo = float(self.init[clip.input[1]]) if len(clip.input) > 1 and clip.input[1] else -np.inf
        hi = float(self.init[clip.input[2]]) if len(clip.input) > 2 and clip.input[2] else np.inf
        return lo, hi

    def _conv(self, node, attrs) -> None:
        weights = self.init[node.input[1]]
        bias = self.init[node.input[2]] if len(node.input) > 2 else np.zeros(len(weights), np.float32)
        self._emit(node, weights, bias, *conv_geometry(node, attrs, weights.shape))

    def _gemm(self, node, attrs) -> None:
        check_plain_gemm(node, attrs)
        weights = self.init[node.input[1]].astype(np.float32)[:, :, None, None]
        self._emit(node, weights, self.init[node.input[2]].astype(np.float32), [1, 1], [(0, 0), (0, 0)], False)

    def _emit(self, node, weights, bias, stride, pads, depthwise) -> None:
        w = self.w
        x, weights, bias = self._in(node.input[0], node), weights.astype(np.float32), bias.astype(np.float32)
        activation, reader = self._activation_after(node)
        out = node.output[0]
        if reader is not None:
            self.fused.add(reader.name)
            out = reader.output[0]
        if activation == "HARD_SIGMOID":  # clip(alpha * z + beta, 0, 1) = relu6(6 * (alpha * z + beta)) / 6
            given = {a.name: a.f for a in reader.attribute}
            alpha, beta = given.get("alpha", 0.2), given.get("beta", 0.5)  # ONNX's defaults
            weights, bias = weights * 6 * alpha, (bias * alpha + beta) * 6
            six = w.conv(node.name, x, weights, bias, stride, pads, depthwise, f"{node.name}_six", activation="RELU6")
            sixth = w.tensor(f"{node.name}_sixth", [1], np.float32, data=np.array([1 / 6], np.float32))
            w.op("MUL", [six, sixth], [w.tensor(self._name(out), w.shape(six), np.float32)], w.s.MulOptionsT())
            return
        w.conv(node.name, x, weights, bias, stride, pads, depthwise, self._name(out), activation=activation)

    def _relu(self, node, attrs) -> None:
        self._unary(node, "RELU")

    def _clip(self, node, attrs) -> None:
        if self._bounds(node) != _RELU6:
            raise MobileNetError(f"LiteRT conversion: {node.name} clips to {self._bounds(node)}, not ReLU6's [0, 6]")
        self._unary(node, "RELU6")

    def _hardswish(self, node, attrs) -> None:
        self._unary(node, "HARD_SWISH")

    def _unary(self, node, kind: str) -> None:
        x = self._in(node.input[0], node)
        self.w.op(kind, [x], [self.w.tensor(self._name(node.output[0]), self.w.shape(x), np.float32)])

    def _add(self, node, attrs) -> None:
        self._binary(node, "ADD", self.w.s.AddOptionsT())

    def _mul(self, node, attrs) -> None:
        self._binary(node, "MUL", self.w.s.MulOptionsT())

    def _binary(self, node, kind: str, options) -> None:
        a, b = self._in(node.input[0], node), self._in(node.input[1], node)
        shape = max(self.w.shape(a), self.w.shape(b), key=np.prod)  # squeeze-excite: (N, H, W, C) * (N, 1, 1, C)
        self.w.op(kind, [a, b], [self.w.tensor(self._name(node.output[0]), shape, np.float32)], options)

    def _globalaveragepool(self, node, attrs) -> None:
        x = self._in(node.input[0], node)
        n, _, _, c = self.w.shape(x)
        self.w.spatial_mean(node.name, x, self.w.tensor(self._name(node.output[0]), [n, 1, 1, c], np.float32))

    def _flatten(self, node, attrs) -> None:  # (N, C, 1, 1) -> (N, C): the NHWC (N, 1, 1, C) tensor as it is
        self.w.index[self._name(node.output[0])] = self._in(node.input[0], node)
