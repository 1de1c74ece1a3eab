"""Channel padding that puts every convolution of an ONNX graph on ONNX Runtime's fastest int8 kernels.

ONNX Runtime's int8 convolutions (MLAS, x86) take a fast "symmetric" path, with int8 weights packed once and an
indirection buffer instead of im2col, only for channel counts it can vectorise: a multiple of 16 channels for a
depthwise convolution, a multiple of 4 input channels for any other. The rest run a generic kernel about 2x slower per
multiply-add. MobileNets miss both in places: the first convolution sees 3 colour channels, and V3's inverted
residuals expand to 72, 120, 184 or 200 channels. Padding those with channels that carry zeros (or anything finite
that no later layer reads) changes no output and buys the fast kernels for a few extra multiply-adds:

* :func:`pad_depthwise` widens each expansion, in the float graph, to the next multiple: the convolution that
  produces it gains filters of zeros, the depthwise convolution and everything element-wise on the way (activation,
  squeeze-excite pooling and gating) carry the extra channels along, and every convolution that reads them gains
  input channels with zero weights.
* :func:`pad_input_channels` widens the quantized graph's input to 4 channels after its ``QuantizeLinear``, with the
  input's zero point (a real 0), so the first convolution's int8 weights gain one channel of zeros.
"""

from __future__ import annotations

import numpy as np

# Element-wise ops that keep a tensor's channels where they are.
CHANNELWISE = {"Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Mul", "Add", "GlobalAveragePool"}


def graph_index(graph):
    """``(weights, producer, consumers)`` of an ONNX ``GraphProto``: its initializers by name, the node that writes
    each tensor, and the nodes that read it."""
    weights = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    return weights, producer, consumers


def _indexed_copy(model):
    """``(copy, weights, producer, consumers)``: a copy of ``model`` and its :func:`graph_index`."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return (out, *graph_index(out.graph))


def _pad_initializer(tensor, axis: int, extra: int) -> None:
    """Appends ``extra`` zeros along ``axis`` of the initializer ``tensor``, in place."""
    from onnx import numpy_helper

    array = numpy_helper.to_array(tensor)
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, extra)
    tensor.CopyFrom(numpy_helper.from_array(np.pad(array, widths), tensor.name))


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _is_depthwise(node, weights) -> bool:
    dims = weights[node.input[1]].dims if len(node.input) > 1 and node.input[1] in weights else ()
    return node.op_type == "Conv" and _group(node) > 1 and len(dims) == 4 and dims[0] == _group(node) and dims[1] == 1


def _plain_conv(node, weights) -> bool:
    """An ungrouped convolution with its weights (and bias) stored in the graph, which padding can widen."""
    return _group(node) == 1 and all(name in weights for name in node.input[1:3])


def _channel_set(start: str, producer, consumers, weights, outputs):
    """The convolutions around ``start``'s channel axis (shared through element-wise ops and depthwise
    convolutions): ``(depthwise, writers, readers)``, or ``None`` where the axis reaches anything else (a reshape, a
    graph input or output, a constant operand), which padding cannot pass through."""
    seen, depthwise, writers, readers, todo = set(), set(), set(), set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name in outputs or name in weights or name not in producer:
            return None
        seen.add(name)
        node = producer[name]
        if _is_depthwise(node, weights):
            if not all(tensor in weights for tensor in node.input[1:3]):
                return None
            depthwise.add(node.name)
            todo.append(node.input[0])
        elif node.op_type == "Conv":
            if not _plain_conv(node, weights):
                return None
            writers.add(node.name)
        elif node.op_type in CHANNELWISE:
            todo += [node.input[0]] if node.op_type == "Clip" else list(node.input)
        else:
            return None
        for user in consumers.get(name, []):
            if user.op_type == "Conv" and not _is_depthwise(user, weights):
                if user.input[0] != name or not _plain_conv(user, weights):
                    return None
                readers.add(user.name)
            elif user.op_type in CHANNELWISE or user.op_type == "Conv":  # the latter depthwise
                todo += list(user.output)
                if user.op_type in ("Mul", "Add"):
                    todo += list(user.input)
            else:
                return None
    return depthwise, writers, readers


def pad_depthwise(model, multiple: int = 16):
    """``(copy, count)``: a copy of the float ONNX ``model`` whose depthwise convolutions all have a multiple of
    ``multiple`` channels, and how many channel sets were widened. Outputs are unchanged: the extra channels are
    written as zeros and read with zero weights."""
    out, weights, producer, consumers = _indexed_copy(model)
    graph = out.graph
    nodes = {n.name: n for n in graph.node}
    outputs = {o.name for o in graph.output}
    done, count = set(), 0
    for node in list(graph.node):
        channels = weights[node.input[1]].dims[0] if _is_depthwise(node, weights) else 0
        if not channels or channels % multiple == 0 or node.name in done:
            continue
        found = _channel_set(node.input[0], producer, consumers, weights, outputs)
        if found is None:
            continue
        depthwise, writers, readers = found
        done |= depthwise
        extra = -channels % multiple
        for name in writers | depthwise:  # new filters of zeros, with zero bias
            for tensor in nodes[name].input[1:3]:
                _pad_initializer(weights[tensor], 0, extra)
        for name in depthwise:
            next(a for a in nodes[name].attribute if a.name == "group").i = channels + extra
        for name in readers:  # the new channels are read with zero weights
            _pad_initializer(weights[nodes[name].input[1]], 1, extra)
        count += 1
    if count:  # the stored shapes of the widened tensors are stale; the runtimes infer them again
        del graph.value_info[:]
    return out, count


def pad_input_channels(model, multiple: int = 4):
    """``(copy, padded)``: the quantized (QDQ) ONNX ``model`` with its first convolution's input widened to a
    multiple of ``multiple`` channels in uint8, after the input's ``QuantizeLinear``; ``padded`` is False (and the
    copy unchanged) where the graph does not start with QuantizeLinear, DequantizeLinear, Conv."""
    from onnx import helper, numpy_helper

    out, weights, producer, consumers = _indexed_copy(model)
    graph = out.graph
    quantize = next((n for n in consumers.get(graph.input[0].name, []) if n.op_type == "QuantizeLinear"), None)
    users = consumers.get(quantize.output[0], []) if quantize is not None else []
    if len(users) != 1 or users[0].op_type != "DequantizeLinear":
        return out, False
    dequantize = users[0]
    convs = consumers.get(dequantize.output[0], [])
    if not convs or any(c.op_type != "Conv" or _group(c) != 1 for c in convs):
        return out, False
    weight_dq = [producer.get(c.input[1]) for c in convs]
    if any(d is None or d.op_type != "DequantizeLinear" or d.input[0] not in weights for d in weight_dq):
        return out, False
    channels = weights[weight_dq[0].input[0]].dims[1]
    extra = -channels % multiple
    if extra == 0 or len(quantize.input) < 3 or quantize.input[2] not in weights:
        return out, False
    for d in weight_dq:
        _pad_initializer(weights[d.input[0]], 1, extra)
    rank = len(graph.input[0].type.tensor_type.shape.dim) or 4
    pads = np.zeros(2 * rank, np.int64)
    pads[rank + 1] = extra  # the end of the channel axis
    prefix = quantize.output[0]
    graph.initializer.append(numpy_helper.from_array(pads, f"{prefix}_channel_pads"))
    pad = helper.make_node("Pad", [prefix, f"{prefix}_channel_pads", quantize.input[2]], [f"{prefix}_padded"],
                           name=f"{prefix}_channel_pad")
    dequantize.input[0] = pad.output[0]
    nodes = list(graph.node)
    nodes.insert(nodes.index(quantize) + 1, pad)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return out, True
