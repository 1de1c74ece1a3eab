"""Channel padding for ONNX Runtime's int8 kernels: every depthwise convolution aligned, the outputs unchanged."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from test_deploy import RES, images, trained_like  # noqa: E402  (after the skips: it needs onnx)

from mobilenet.deploy import export_onnx  # noqa: E402
from mobilenet.deploy.align import pad_depthwise, pad_input_channels  # noqa: E402
from mobilenet.deploy.images import sample_images  # noqa: E402
from mobilenet.deploy.quantize import quantize_onnx  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _run(graph, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def _depthwise_channels(graph) -> list[int]:
    weights = {t.name: t.dims for t in graph.initializer}
    return [weights[n.input[1]][0] for n in graph.node if n.op_type == "Conv"
            and next((a.i for a in n.attribute if a.name == "group"), 1) > 1]


@pytest.mark.parametrize("name, alpha", [("mobilenet_v3_large", 0.25), ("mobilenet_v3_small", 0.25),
                                         ("mobilenet_v1", 0.75)])
def test_pad_depthwise_aligns_every_depthwise_conv_and_changes_no_output(name, alpha, tmp_path):
    # V3's expansions (and squeeze-excite) and V1's plain dw/pw chain at alpha 0.75 (24 channels) both get padded.
    path = str(tmp_path / "m.onnx")
    model = trained_like(name, num_classes=5, alpha=alpha)
    export_onnx(model, path, num_images=2)
    source = onnx.load(path)
    before = _depthwise_channels(source.graph)
    padded, count = pad_depthwise(source, 16)
    after = _depthwise_channels(padded.graph)
    assert count > 0 and any(c % 16 for c in before)
    assert all(c % 16 == 0 for c in after)
    assert all(a - b < 16 and a >= b for a, b in zip(after, before))
    x = images(4, seed=1).numpy()
    np.testing.assert_allclose(_run(padded, x), _run(source, x), rtol=1e-5, atol=1e-4)
    assert _depthwise_channels(source.graph) == before  # the input graph is left alone


def _depthwise_into_flatten():
    """conv 1x1 (3 -> 24) -> depthwise 3x3 -> Flatten -> Gemm: the padded channels would reach the Gemm."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {"w1": rng.normal(size=(24, 3, 1, 1)), "w2": rng.normal(size=(24, 1, 3, 3)),
               "w3": rng.normal(size=(24 * 16, 5))}
    nodes = [helper.make_node("Conv", ["input", "w1"], ["a"]),
             helper.make_node("Conv", ["a", "w2"], ["b"], group=24, pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["b"], ["c"]),
             helper.make_node("Gemm", ["c", "w3"], ["logits"])]
    graph = helper.make_graph(
        nodes, "flat", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(w.astype(np.float32), k) for k, w in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_pad_depthwise_leaves_a_graph_it_cannot_pad_alone():
    source = _depthwise_into_flatten()
    padded, count = pad_depthwise(source, 16)
    assert count == 0 and _depthwise_channels(padded.graph) == [24]
    x = np.random.default_rng(1).normal(size=(1, 3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(_run(padded, x), _run(source, x))


def test_quantized_input_padding_changes_no_output(tmp_path):
    fp32 = str(tmp_path / "v2.onnx")
    export_onnx(trained_like("mobilenet_v2", num_classes=5), fp32, num_images=2)
    calib = sample_images(16, RES, seed=3)[0]
    plain, aligned = str(tmp_path / "plain.onnx"), str(tmp_path / "aligned.onnx")
    quantize_onnx(fp32, plain, calib, keep_float=(), align=False)
    quantize_onnx(fp32, aligned, calib, keep_float=())
    graph = onnx.load(aligned)
    assert "channels padded" in {p.key: p.value for p in graph.metadata_props}["mobilenet.precision"]
    pads = [n for n in graph.graph.node if n.op_type == "Pad"]
    assert len(pads) == 1 and pads[0].input[0] == next(n for n in graph.graph.node
                                                        if n.op_type == "QuantizeLinear").output[0]
    x = images(6, seed=4).numpy()
    np.testing.assert_array_equal(_run(graph, x), _run(onnx.load(plain), x))
    _, again = pad_input_channels(graph, 4)  # already 4 channels: nothing to do
    assert not again
