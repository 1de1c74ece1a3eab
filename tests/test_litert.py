"""The LiteRT backends: litert matches PyTorch to 1e-4; litert-int8, the QDQ ONNX graph converted to TensorFlow Lite,
computes what ONNX Runtime computes on that graph (bit for bit where no hard-swish is involved) and keeps fp32's top-1;
both handle every batch size and fail with one line where they cannot convert."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert", reason="LiteRT is not installed (pip install 'mobilenet[litert]')")

from test_deploy import images, trained_like  # noqa: E402  (after the skips: it needs onnx)

from mobilenet.deploy import export_onnx, make_runner  # noqa: E402
from mobilenet.deploy.quantize import quantize_onnx  # noqa: E402
from mobilenet.deploy.tflite_writer import same_pads  # noqa: E402
from mobilenet.errors import MobileNetError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _both(name: str, tmp_path):
    """(litert-int8, ONNX Runtime on the very QDQ graph litert-int8 converts, torch fp32) runners of one model."""
    model = trained_like(name)
    calib = images(48, seed=3)
    fp32, qdq = str(tmp_path / "m.onnx"), str(tmp_path / "m.qdq.onnx")
    export_onnx(model, fp32, num_images=2)
    quantize_onnx(fp32, qdq, calib, keep_float=(), align=False)  # what the litert-int8 runner quantizes
    return (make_runner(model, "litert-int8", calib=calib), make_runner(None, "onnxruntime-int8", onnx_path=qdq),
            make_runner(model, "torch"))


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small_minimal"])
def test_int8_is_onnxruntimes_int8_bit_for_bit(name, tmp_path):
    # Convolutions (stride-2 ones with explicit padding), ReLU/ReLU6 ranges, residual adds, pooling and the
    # classifier: both runtimes requantize with the same scales and round the same way.
    litert, ort, _ = _both(name, tmp_path)
    x = images(8, seed=5)
    assert litert.precision == "int8" and "XNNPACK" in litert.note
    torch.testing.assert_close(litert(x), ort(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v4_conv_small"])
def test_hard_swish_and_squeeze_excite_stay_within_int8_error(name, tmp_path):
    # Hard-swish is rebuilt from int8 ops (an add onto a [0, 6] grid and a multiply, the 1/6 carried into the readers'
    # weights) and the squeeze-excite's hard-sigmoid folds into its convolution, so the logits differ from ONNX
    # Runtime's, which computes hard-swish in float and rounds once: each hard-swish adds a rounding of its gate, so
    # the error against fp32 may grow, but stays of the order of ONNX Runtime's on the same grids.
    litert, ort, reference = _both(name, tmp_path)
    x = images(24, seed=5)
    ours, theirs, fp32 = litert(x), ort(x), reference(x)
    print(f"{name}: mean |logit error| vs fp32: litert-int8 {float((ours - fp32).abs().mean()):.3f}, "
          f"ONNX Runtime int8 {float((theirs - fp32).abs().mean()):.3f}")
    assert (ours - fp32).abs().mean() <= 2 * (theirs - fp32).abs().mean()
    assert (ours.argmax(1) == fp32.argmax(1)).float().mean() >= 0.75


def test_same_padding_is_tensorflows():
    # ceil(size / stride) outputs; an odd total padding puts the extra pixel after.
    assert same_pads(112, 3, 2) == (0, 1)  # where PyTorch's (1, 1) needs an explicit PAD
    assert same_pads(7, 3, 2) == (1, 1)
    assert same_pads(14, 5, 1) == (2, 2)
    assert same_pads(28, 5, 2) == (1, 2)
    assert same_pads(7, 1, 1) == (0, 0)


def test_changing_batch_sizes_give_each_image_its_own_logits():
    from mobilenet.deploy import openvino

    model = trained_like("mobilenet_v2", num_classes=5)
    runner = make_runner(model, "litert-int8", calib=images(16, seed=3))
    x = images(4, seed=5)
    whole = runner(x)
    for n in (2, 1, 3):
        torch.testing.assert_close(runner(x[:n]), whole[:n], rtol=0, atol=1e-6)
    for n in range(1, openvino.MAX_SHAPES + 3):  # more shapes than are kept: the oldest are built again
        assert runner(images(n, seed=n)).shape == (n, 5)
    torch.testing.assert_close(runner(x.numpy()), whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", ["litert", "litert-int8"])
def test_a_graph_without_a_conversion_is_one_clear_error(backend):
    # V4-Hybrid's layer scale and attention have no TensorFlow Lite form here.
    with pytest.raises(MobileNetError, match="LiteRT conversion: .* \\(.*\\)"):
        make_runner(trained_like("mobilenet_v4_hybrid_medium", alpha=1.0), backend, calib=images(8, seed=3))


def test_an_int8_file_is_refused(tmp_path):
    model = trained_like("mobilenet_v1")
    fp32, int8 = str(tmp_path / "m.onnx"), str(tmp_path / "m.int8.onnx")
    export_onnx(model, fp32, num_images=2)
    quantize_onnx(fp32, int8, images(16, seed=3))
    with pytest.raises(MobileNetError, match="converts a float ONNX file itself"):
        make_runner(None, "litert-int8", onnx_path=int8)
    assert make_runner(None, "litert-int8", onnx_path=fp32, calib=images(16, seed=3))(images(2)).shape == (2, 7)


def test_missing_litert_is_one_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # import ai_edge_litert now raises ImportError
    with pytest.raises(MobileNetError, match="pip install 'mobilenet\\[litert\\]'"):
        make_runner(trained_like("mobilenet_v1"), "litert-int8")


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
                                  "mobilenet_v4_conv_small"])
def test_fp32_matches_pytorch(name, tmp_path):
    # Fused ReLU/ReLU6, the squeeze-excite's hard-sigmoid as a scaled convolution with ReLU6, hard-swish, padding.
    model = trained_like(name)
    x = images(3)
    runner = make_runner(model, "litert")
    assert runner.precision == "fp32"
    torch.testing.assert_close(runner(x), make_runner(model, "torch")(x), rtol=1e-4, atol=1e-4)
    path = str(tmp_path / "m.onnx")
    export_onnx(model, path, num_images=2)
    from_file = make_runner(None, "litert", onnx_path=path)  # the file alone describes the model
    torch.testing.assert_close(from_file(x.numpy()), runner(x), rtol=1e-5, atol=1e-5)


def test_the_note_says_whether_xnnpack_runs_the_whole_graph():
    import mobilenet

    calib = images(16, seed=3)
    assert "XNNPACK runs the whole graph" in make_runner(trained_like("mobilenet_v3_large"), "litert-int8",
                                                         calib=calib).note
    # A fresh network's activations shrink layer after layer (BN's running statistics are still 0 and 1): int8
    # rescalings far outside what XNNPACK takes, so those operators fall back to TensorFlow Lite's kernels.
    fresh = mobilenet.create_model("mobilenet_v3_large", alpha=0.25, resolution=64).eval()
    runner = make_runner(fresh, "litert-int8", calib=calib)
    assert "parts of the graph" in runner.note
    assert runner(images(2)).shape == (2, 1000)
