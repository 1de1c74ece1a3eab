"""TensorFlow Lite flatbuffers written from Python: a one-subgraph model's tensors, buffers and operators, and the
convolution that both of :mod:`mobilenet.deploy.litert`'s converters (int8 and float) emit.

The schema's Python classes come with the ``ai-edge-litert`` package, so no TensorFlow and no converter is needed.
"""

from __future__ import annotations

import numpy as np

from ..errors import MobileNetError

# Each operator's version: the first with per-channel int8 where it has one (a float model runs under it too).
VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "ADD": 2, "MUL": 2, "MEAN": 2, "PAD": 2, "RESHAPE": 1,
            "TRANSPOSE": 2, "QUANTIZE": 2, "DEQUANTIZE": 2, "HARD_SWISH": 1, "RELU": 1, "RELU6": 1}
_TYPES = {np.float32: "FLOAT32", np.int8: "INT8", np.int32: "INT32"}


def schema():
    """The TensorFlow Lite schema module that ``ai-edge-litert`` ships."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise MobileNetError("the LiteRT backends need the ai-edge-litert package: pip install 'mobilenet[litert]'") \
            from None
    return schema_py_generated


class Writer:
    """The tensors, buffers and operators of a one-subgraph TensorFlow Lite model, in the order they are added."""

    def __init__(self):
        self.s = schema()
        self.tensors, self.buffers, self.ops, self.codes = [], [self.s.BufferT()], [], []  # buffer 0: the empty one
        self.index: dict[str, int] = {}  # ONNX tensor name -> tensor

    def tensor(self, name: str, shape, dtype, data=None, grid=None, axis: int = 0) -> int:
        """A new tensor, constant if ``data`` is given; ``grid`` = (scale, zero point) of an int8 or int32 one, each a
        number or one per channel of ``axis``."""
        s = self.s
        t = s.TensorT()
        t.name, t.shape, t.type = name.encode(), [int(d) for d in shape], getattr(s.TensorType, _TYPES[dtype])
        if data is not None:
            buf = s.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data, dtype=dtype).tobytes(), np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if grid is not None:
            q = s.QuantizationParametersT()
            scale = np.atleast_1d(np.asarray(grid[0], np.float64))
            q.scale = [float(v) for v in scale]
            q.zeroPoint = [int(v) for v in np.broadcast_to(np.asarray(grid[1], np.int64), scale.shape)]
            q.quantizedDimension = axis
            t.quantization = q
        self.tensors.append(t)
        self.index[name] = len(self.tensors) - 1
        return self.index[name]

    def shape(self, i: int) -> list[int]:
        return list(self.tensors[i].shape)

    def grid(self, i: int) -> tuple[float, int] | None:
        q = self.tensors[i].quantization
        return (q.scale[0], q.zeroPoint[0]) if q is not None else None

    def dtype(self, i: int):
        return next(d for d, name in _TYPES.items() if getattr(self.s.TensorType, name) == self.tensors[i].type)

    def op(self, kind: str, inputs, outputs, options=None) -> None:
        s = self.s
        if kind not in self.codes:
            self.codes.append(kind)
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.codes.index(kind), list(inputs), list(outputs)
        if options is not None:
            o.builtinOptionsType = getattr(s.BuiltinOptions, type(options).__name__[:-1])  # Conv2DOptionsT -> ..
            o.builtinOptions = options
        self.ops.append(o)

    def finish(self, inputs, outputs, description: str) -> bytes:
        import flatbuffers

        s = self.s
        sub = s.SubGraphT()
        sub.tensors, sub.operators, sub.inputs, sub.outputs = self.tensors, self.ops, list(inputs), list(outputs)
        model = s.ModelT()
        model.version, model.subgraphs, model.buffers, model.description = 3, [sub], self.buffers, description
        model.operatorCodes = []
        for kind in self.codes:
            code = s.OperatorCodeT()
            code.builtinCode = getattr(s.BuiltinOperator, kind)
            code.deprecatedBuiltinCode = min(code.builtinCode, 127)  # the old int8 field; 127 = "see builtinCode"
            code.version = VERSIONS[kind]
            model.operatorCodes.append(code)
        builder = flatbuffers.Builder(1 << 20)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    def int8_constant(self, name: str, value: float) -> int:
        """A one-element int8 tensor holding ``value`` exactly (127 on a grid of ``value`` / 127)."""
        return self.tensor(name, [1], np.int8, data=np.array([127], np.int8), grid=(value / 127, 0))

    def spatial_mean(self, name: str, x: int, out: int) -> None:
        """``out`` = the mean of the NHWC tensor ``x`` over height and width (kept as 1 x 1)."""
        options = self.s.ReducerOptionsT()
        options.keepDims = True
        axes = self.tensor(f"{name}_axes", [2], np.int32, data=np.array([1, 2], np.int32))
        self.op("MEAN", [x, axes], [out], options)

    def nchw_input(self, name: str, shape, grid=None) -> tuple[int, int]:
        """``(input, nhwc)``: the model's float NCHW input, like every other backend's, and its NHWC form; with a
        ``grid``, quantized before the transpose (a quarter of the bytes: numpy's transpose of the float batch took
        a tenth of the time at batch 32)."""
        n, c, h, wd = shape
        x = self.tensor(name, [n, c, h, wd], np.float32)
        src = x
        if grid is not None:
            src = self.tensor(f"{name}_int8", [n, c, h, wd], np.int8, grid=grid)
            self.op("QUANTIZE", [x], [src])
        perm = self.tensor(f"{name}_perm", [4], np.int32, data=np.array([0, 2, 3, 1], np.int32))
        nhwc = self.tensor(f"{name}_nhwc", [n, h, wd, c], self.dtype(src), grid=grid)
        self.op("TRANSPOSE", [src, perm], [nhwc], self.s.TransposeOptionsT())
        return x, nhwc

    def conv(self, name: str, x: int, weights: np.ndarray, bias: np.ndarray, stride, pads, depthwise: bool,
             out_name: str, w_grid=None, b_grid=None, out_grid=None, activation: str = "NONE") -> int:
        """A convolution of ``x`` (NHWC) with ONNX-layout ``weights`` (O, I, kh, kw) and ONNX ``pads``
        ((top, bottom), (left, right)); returns its output tensor. Where the padding is not TensorFlow's ``SAME`` (a
        stride-2 convolution of an even size: PyTorch pads one pixel before and after, ``SAME`` only after) an
        explicit ``PAD`` (with the zero point, for int8) comes first."""
        s = self.s
        n, h, wd, _ = self.shape(x)
        k_h, k_w = weights.shape[2:]
        same = [same_pads(size, k, st) for size, k, st in zip((h, wd), (k_h, k_w), stride)]
        padding = s.Padding.SAME if pads == same else s.Padding.VALID
        if padding == s.Padding.VALID and any(p for pair in pads for p in pair):
            paddings = np.array([[0, 0], *pads, [0, 0]], np.int32)
            shape = [d + int(a + b) for d, (a, b) in zip(self.shape(x), paddings)]
            padded = self.tensor(f"{name}_padded", shape, self.dtype(x), grid=self.grid(x))
            self.op("PAD", [x, self.tensor(f"{name}_paddings", [4, 2], np.int32, data=paddings)], [padded],
                    s.PadOptionsT())
            x, h, wd = padded, shape[1], shape[2]
        if padding == s.Padding.SAME:
            out_h, out_w = -(-h // stride[0]), -(-wd // stride[1])
        else:
            out_h, out_w = (h - k_h) // stride[0] + 1, (wd - k_w) // stride[1] + 1
        if depthwise:
            options, kind = s.DepthwiseConv2DOptionsT(), "DEPTHWISE_CONV_2D"
            options.depthMultiplier = 1
            weights, axis = weights.transpose(1, 2, 3, 0), 3  # (1, kh, kw, C)
        else:
            options, kind = s.Conv2DOptionsT(), "CONV_2D"
            weights, axis = weights.transpose(0, 2, 3, 1), 0  # (O, kh, kw, I)
        options.padding, options.strideH, options.strideW = padding, int(stride[0]), int(stride[1])
        options.fusedActivationFunction = getattr(s.ActivationFunctionType, activation)
        filt = self.tensor(f"{name}_weights", weights.shape, weights.dtype.type, data=weights, grid=w_grid, axis=axis)
        b = self.tensor(f"{name}_bias", bias.shape, bias.dtype.type, data=bias, grid=b_grid)
        out = self.tensor(out_name, [n, out_h, out_w, len(bias)], self.dtype(x), grid=out_grid)
        self.op(kind, [x, filt, b], [out], options)
        return out


def conv_geometry(node, attrs: dict, weight_shape) -> tuple[list[int], list[tuple[int, int]], bool]:
    """``(strides, ((top, bottom), (left, right)), depthwise)`` of an ONNX ``Conv`` with weights of ``weight_shape``
    (O, I/group, kh, kw).

    Raises:
        MobileNetError: a dilated or grouped (other than depthwise) convolution, which neither converter writes.
    """
    group = attrs.get("group", 1)
    depthwise = group > 1 and group == weight_shape[0] and weight_shape[1] == 1
    if attrs.get("dilations", [1, 1]) != [1, 1] or (group > 1 and not depthwise):
        raise MobileNetError(f"LiteRT conversion: {node.name} is dilated or grouped")
    pads = attrs.get("pads", [0, 0, 0, 0])
    return attrs.get("strides", [1, 1]), [(pads[0], pads[2]), (pads[1], pads[3])], depthwise


def check_plain_gemm(node, attrs: dict) -> None:
    """Raises :class:`MobileNetError` unless the ONNX ``Gemm`` is a fully connected layer (``x @ W.T + b``), which
    both converters write as a 1x1 convolution on the (N, 1, 1, C) tensor."""
    if attrs.get("transB") != 1 or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        raise MobileNetError(f"LiteRT conversion: {node.name} is not a plain fully connected layer")


def same_pads(size: int, k: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding (before, after) of one axis: the output is ceil(size / stride), and an odd
    total goes after."""
    total = max((-(-size // stride) - 1) * stride + k - size, 0)
    return total // 2, total - total // 2
