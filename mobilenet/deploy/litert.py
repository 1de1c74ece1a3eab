"""int8 on LiteRT (TensorFlow Lite) and XNNPACK: the int8 graph of :func:`~mobilenet.deploy.quantize.quantize_onnx`
rewritten as a ``.tflite`` flatbuffer, so that XNNPACK's fused int8 kernels run it (the ``litert-int8`` backend;
``litert``, its float counterpart, is :mod:`mobilenet.deploy.litert_fp32`).

XNNPACK runs each int8 operator in one pass with little overhead per operator: a ReLU, ReLU6 or the squeeze-excite's
hard-sigmoid is the clamp of its convolution's output range, padding folds into the convolution, and its int8
element-wise kernels are fast. ONNX Runtime spends a third of its V3-Large batch-1 time in hard-swish and
squeeze-excite element-wise passes; on a Zen 5 EPYC (2 threads) V3-Large int8 ran 0.79 ms here against 1.30 ms in
ONNX Runtime and 1.02 ms for OpenVINO's bf16.

The conversion reads every number from the QDQ ONNX graph, so both runtimes compute with the same int8 weights and
activation grids:

* every ``QuantizeLinear`` output is one int8 tensor (a ``uint8`` zero point ``z`` becomes ``z - 128``: the same
  grid, shifted); every float op between ``DequantizeLinear`` inputs and a ``QuantizeLinear`` output becomes one
  operator (two for hard-swish);
* tensors are NHWC, a flattened (N, C) tensor stays (N, 1, 1, C) and a ``Gemm`` is a 1×1 convolution, until the
  logits; convolution weights are OHWI (depthwise: 1HWC), scaled per output channel;
* a convolution whose ONNX padding is not TensorFlow's ``SAME`` (a stride-2 convolution of an even size pads one
  pixel before and after; ``SAME`` only after) gets an explicit ``PAD`` with the zero point;
* ``HardSigmoid`` (``clip(alpha * x + beta, 0, 1)``, which TensorFlow Lite lacks) folds into the convolution before
  it: weight scales times ``alpha``, ``beta`` added to the bias, and an output grid of exactly [0, 1] whose
  saturation is the clip;
* ``HardSwish`` is ``x * clip(x + 3, 0, 6) / 6``: XNNPACK has no int8 hard-swish (TensorFlow Lite's own kernel
  would split the graph at every one), so it is an int8 ``ADD`` and ``MUL``, the ``/ 6`` carried into the weights of
  the convolutions that read it (:meth:`_Converter._hardswish`).
"""

from __future__ import annotations

import numpy as np

from ..errors import MobileNetError
from ..native_stderr import dropping
from .align import graph_index
from .onnx_io import INPUT_NAME, OUTPUT_NAME
from .openvino import MAX_SHAPES
from .tflite_writer import Writer, check_plain_gemm, conv_geometry

_SKIPPED = ("QuantizeLinear", "DequantizeLinear", "Constant")  # read where used; a Constant: a Clip's dead bound
_UNIT = (1 / 255, -128)  # the int8 grid of [0, 1]: the squeeze-excite gate's range


def to_tflite(qdq) -> bytes:
    """The ``.tflite`` flatbuffer of the QDQ ONNX model ``qdq`` (an ``onnx.ModelProto`` written by
    :func:`~mobilenet.deploy.quantize.quantize_onnx` with ``align=False``): input ``input`` float32 (N, C, H, W) with
    N = 1 (resize it at run time), output ``logits`` float32 (N, classes).

    Raises:
        MobileNetError: the graph has an op or pattern without a conversion (e.g. V4-Hybrid's attention).
    """
    return _Converter(qdq).run()


class _Converter:
    def __init__(self, model):
        from onnx import numpy_helper

        self.w = Writer()
        self.s = self.w.s
        graph = model.graph
        weights, self.producer, self.consumers = graph_index(graph)
        self.init = {name: numpy_helper.to_array(t) for name, t in weights.items()}
        self.nodes = list(graph.node)
        self.input_shape = [1, *(d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:])]
        self.folded: set[str] = set()  # HardSigmoid nodes folded into their convolution
        self.factor: dict[int, float] = {}  # tensor -> f: declared scale f times its integers' (see _hardswish)

    def run(self) -> bytes:
        import onnx

        w = self.w
        q_in = next((q for q in self.nodes if q.op_type == "QuantizeLinear" and q.input[0] == INPUT_NAME), None)
        if q_in is None:
            raise MobileNetError("LiteRT conversion: the graph's input is not quantized (an int8 QDQ graph is needed)")
        x, nhwc = w.nchw_input(INPUT_NAME, self.input_shape, grid=self._grid(q_in))
        w.index[q_in.output[0]] = nhwc
        for node in self.nodes:
            if node.op_type in _SKIPPED or node.name in self.folded:
                continue
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            handler = getattr(self, f"_{node.op_type.lower()}", None)
            if handler is None:
                raise MobileNetError(f"LiteRT conversion: {node.op_type} ({node.name}) has no int8 equivalent here")
            handler(node, attrs)
        last = self._plain(self._source(OUTPUT_NAME), OUTPUT_NAME)
        classes = w.shape(last)[-1]
        flat = w.tensor(f"{OUTPUT_NAME}_int8", [1, classes], np.int8, grid=w.grid(last))
        shape = w.tensor(f"{OUTPUT_NAME}_shape", [2], np.int32, data=np.array([-1, classes], np.int32))
        w.op("RESHAPE", [last, shape], [flat])
        y = w.tensor(OUTPUT_NAME, [1, classes], np.float32)
        w.op("DEQUANTIZE", [flat], [y])
        return w.finish([x], [y], "mobilenet int8 (QDQ ONNX graph converted)")

    # -- the ONNX graph's quantization --------------------------------------------------------------------------------
    def _grid(self, q) -> tuple[float, int]:
        """(scale, int8 zero point) of a ``QuantizeLinear`` node."""
        zero = self.init[q.input[2]]
        return float(self.init[q.input[1]]), int(zero) - 128 if zero.dtype == np.uint8 else int(zero)

    def _source(self, name: str, node=None) -> int:
        """The int8 tensor that the ``DequantizeLinear`` producing ``name`` (an input of ``node``) reads."""
        dq = self.producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in self.w.index:
            reader = f"{node.op_type} ({node.name}) reads {name!r}" if node is not None else repr(name)
            raise MobileNetError(f"LiteRT conversion: {reader}, which is not an int8 activation")
        return self.w.index[dq.input[0]]

    def _weights(self, name: str):
        """(integers, scales) of the quantized initializer behind the ``DequantizeLinear`` producing ``name``."""
        dq = self.producer[name]
        return self.init[dq.input[0]], np.asarray(self.init[dq.input[1]], np.float64).reshape(-1)

    def _quantized_output(self, node):
        users = self.consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            raise MobileNetError(f"LiteRT conversion: the output of {node.name} is not quantized once")
        return users[0]

    def _output(self, node, shape, grid=None, factor: float = 1.0) -> int:
        """The int8 tensor of ``node``'s quantized output, on ``grid`` (default: the ONNX graph's), its declared
        scale ``factor`` times that (see :meth:`_hardswish`)."""
        q = self._quantized_output(node)
        scale, zero = grid or self._grid(q)
        out = self.w.tensor(q.output[0], shape, np.int8, grid=(scale * factor, zero))
        if factor != 1.0:
            self.factor[out] = factor
        return out

    def _plain(self, x: int, name: str) -> int:
        """``x``, or for a tensor that carries a factor a copy multiplied by its inverse (one int8 pass)."""
        factor = self.factor.get(x, 1.0)
        if factor == 1.0:
            return x
        w = self.w
        scale, zero = w.grid(x)
        inverse = w.int8_constant(f"{name}_inverse", 1 / factor)
        out = w.tensor(f"{name}_plain", w.shape(x), np.int8, grid=(scale / factor, zero))
        w.op("MUL", [x, inverse], [out], self.s.MulOptionsT())
        return out

    # -- operators ----------------------------------------------------------------------------------------------------
    def _flatten(self, node, attrs) -> None:  # (N, C, 1, 1) -> (N, C): the NHWC (N, 1, 1, C) tensor as it is
        self.w.index[self._quantized_output(node).output[0]] = self._source(node.input[0], node)  # factor and all

    def _conv(self, node, attrs) -> None:
        if len(node.input) < 3:  # BN folding gives every convolution a bias
            raise MobileNetError(f"LiteRT conversion: {node.name} has no bias")
        wq, ws = self._weights(node.input[1])
        bq, bs = self._weights(node.input[2])
        stride, pads, depthwise = conv_geometry(node, attrs, wq.shape)
        x = self._source(node.input[0], node)
        self._conv_op(node, x, wq, ws, bq.astype(np.int64), bs, stride, pads, depthwise)

    def _gemm(self, node, attrs) -> None:
        check_plain_gemm(node, attrs)
        wq, ws = self._weights(node.input[1])
        bq, bs = self._weights(node.input[2])
        x = self._source(node.input[0], node)
        self._conv_op(node, x, wq[:, :, None, None], ws, bq.astype(np.int64), bs, [1, 1], [(0, 0), (0, 0)], False)

    def _conv_op(self, node, x, wq, ws, bq, bs, stride, pads, depthwise) -> None:
        w = self.w
        grid, out_node = None, node
        ws = ws / self.factor.get(x, 1.0)  # an input declared f times too coarse: weights f times smaller
        gate = self._hard_sigmoid_after(node)
        if gate is not None:  # clip(alpha * conv + beta, 0, 1): scale the weights, shift the bias, clamp to [0, 1]
            given = {a.name: a.f for a in gate.attribute}
            alpha, beta = given.get("alpha", 0.2), given.get("beta", 0.5)  # ONNX's defaults
            x_scale = bs / ws  # the input's scale, one per channel
            ws = ws * alpha
            bq = bq + np.round(beta / (x_scale * ws)).astype(np.int64)
            bs = x_scale * ws
            out_node, grid = gate, _UNIT
            self.folded.add(gate.name)
        scale, zero = grid or self._grid(self._quantized_output(out_node))
        w.conv(node.name, x, wq, np.clip(bq, -2**31, 2**31 - 1).astype(np.int32), stride, pads, depthwise,
               self._quantized_output(out_node).output[0], w_grid=(ws, 0), b_grid=(bs, 0), out_grid=(scale, zero))

    def _hard_sigmoid_after(self, node):
        """The ``HardSigmoid`` node that is the only reader of ``node``'s quantized output, else None."""
        dqs = self.consumers.get(self._quantized_output(node).output[0], [])
        readers = self.consumers.get(dqs[0].output[0], []) if len(dqs) == 1 else []
        return readers[0] if len(readers) == 1 and readers[0].op_type == "HardSigmoid" else None

    def _hardswish(self, node, attrs) -> None:
        """``x * clip(x + 3, 0, 6) / 6`` as two int8 passes: an ``ADD`` of 3 onto the grid of [0, 6] (whose saturation
        is the clip) and a ``MUL``. The product is ``6 * hard_swish(x)``; written with a declared scale six times the
        ONNX graph's, its integers are those of ``hard_swish(x)`` on that graph's grid, and the six is carried to the
        readers: a convolution takes weights six times smaller, pooling and the squeeze-excite product pass it on,
        anything else gets a multiply by 1/6 (:meth:`_plain`). Computing the 1/6 inside the gate (a 1x1 depthwise
        convolution) cost XNNPACK four times the ``MUL``: V3-Large at batch 1 took 1.01 ms against 0.80 without it."""
        s, w = self.s, self.w
        x = self._plain(self._source(node.input[0], node), node.name)
        shape = w.shape(x)
        three = w.int8_constant(f"{node.name}_three", 3.0)
        gate = w.tensor(f"{node.name}_gate", shape, np.int8, grid=(6 / 255, -128))
        w.op("ADD", [x, three], [gate], s.AddOptionsT())
        w.op("MUL", [x, gate], [self._output(node, shape, factor=6.0)], s.MulOptionsT())

    def _add(self, node, attrs) -> None:  # a residual connection: both operands on one footing
        a, b = self._source(node.input[0], node), self._source(node.input[1], node)
        factor = self.factor.get(a, 1.0)
        if self.factor.get(b, 1.0) != factor:
            a, b, factor = self._plain(a, f"{node.name}_a"), self._plain(b, f"{node.name}_b"), 1.0
        self.w.op("ADD", [a, b], [self._output(node, self.w.shape(a), factor=factor)], self.s.AddOptionsT())

    def _mul(self, node, attrs) -> None:  # squeeze-excite: (N, H, W, C) times a (N, 1, 1, C) gate
        a, b = self._source(node.input[0], node), self._source(node.input[1], node)
        shape = max(self.w.shape(a), self.w.shape(b), key=np.prod)
        factor = self.factor.get(a, 1.0) * self.factor.get(b, 1.0)
        self.w.op("MUL", [a, b], [self._output(node, shape, factor=factor)], self.s.MulOptionsT())

    def _globalaveragepool(self, node, attrs) -> None:
        x = self._source(node.input[0], node)
        n, _, _, c = self.w.shape(x)
        self.w.spatial_mean(node.name, x, self._output(node, [n, 1, 1, c], factor=self.factor.get(x, 1.0)))


def compile_litert(tflite: bytes, threads: int):
    """``(run, coverage)``: ``run`` maps a float32 (B, C, H, W) array to a logits tensor on TensorFlow Lite's
    interpreter with the XNNPACK delegate over ``threads`` threads, one interpreter per input shape (resizing one
    re-plans its XNNPACK graph); ``coverage`` says whether XNNPACK took the whole graph. An operator it refuses (an
    int8 rescaling outside its range, such as an untrained network's vanishing activations produce) runs in
    TensorFlow Lite's own kernels, correct but several times slower, and splits the graph."""
    import torch

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise MobileNetError("the LiteRT backends need the ai-edge-litert package: pip install 'mobilenet[litert]'") \
            from None
    interpreters: dict[tuple[int, ...], tuple] = {}

    def interpreter_for(shape: tuple[int, ...]):
        if shape not in interpreters:
            if len(interpreters) >= MAX_SHAPES:  # the oldest goes, as for OpenVINO's compiled shapes
                del interpreters[next(iter(interpreters))]
            with dropping("INFO: "):  # "Created TensorFlow Lite XNNPACK delegate for CPU.", on every process
                it = Interpreter(model_content=tflite, num_threads=threads)
                it.resize_tensor_input(0, list(shape), strict=False)
                it.allocate_tensors()
            interpreters[shape] = (it, it.get_input_details()[0]["index"], it.get_output_details()[0]["index"])
        return interpreters[shape]

    def run(images) -> torch.Tensor:
        x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
        x = np.ascontiguousarray(x, dtype=np.float32)
        it, inp, out = interpreter_for(tuple(x.shape))
        it.set_tensor(inp, x)
        it.invoke()
        return torch.from_numpy(it.get_tensor(out).copy())

    it, inp, out = interpreter_for(tuple(_input_shape(tflite)))
    return run, _coverage(it, inp, out)


def _input_shape(tflite: bytes) -> list[int]:
    from .tflite_writer import schema

    model = schema().Model.GetRootAs(tflite, 0)
    graph = model.Subgraphs(0)
    return [int(d) for d in graph.Tensors(graph.Inputs(0)).ShapeAsNumpy()]


def _coverage(it, inp: int, out: int) -> str:
    """Whether XNNPACK runs the whole graph, or in how many parts, with TensorFlow Lite's kernels between them."""
    ops = it._get_ops_details()
    parts = [o for o in ops if o["op_name"] == "DELEGATE"]
    replaced = {t for o in parts for t in (*o["inputs"], *o["outputs"])}
    if len(parts) == 1 and inp in replaced and out in replaced:
        return "XNNPACK runs the whole graph"
    return (f"XNNPACK runs {len(parts)} parts of the graph, TensorFlow Lite's own kernels the operators between them "
            "(slower)")
