"""The OpenVINO backends: fp32 parity with PyTorch for every model family, bf16 and int8 top-1 agreement, and the
precision each one reports it ran."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'mobilenet[openvino]')")

from test_deploy import images, trained_like  # noqa: E402  (after the skips: it needs onnx)

from mobilenet.deploy import export_onnx, make_runner  # noqa: E402
from mobilenet.errors import MobileNetError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"])
def test_fp32_matches_pytorch(name, tmp_path):
    model = trained_like(name)
    x = images(3)
    runner = make_runner(model, "openvino")
    assert runner.precision == "fp32"
    torch.testing.assert_close(runner(x), make_runner(model, "torch")(x), rtol=1e-4, atol=1e-4)
    path = str(tmp_path / "m.onnx")
    export_onnx(model, path, num_images=2)
    from_file = make_runner(None, "openvino", onnx_path=path)  # the file alone describes the model
    assert from_file.info.name == name
    torch.testing.assert_close(from_file(x.numpy()), runner(x), rtol=1e-5, atol=1e-5)


def test_bf16_says_what_ran_and_agrees_on_top1():
    model = trained_like("mobilenet_v2", num_classes=5)
    x = images(24, seed=7)
    runner = make_runner(model, "openvino-bf16")
    has_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert runner.precision == ("bf16" if has_bf16 else "fp32") and runner.precision in runner.note
    agree = (runner(x).argmax(1) == make_runner(model, "torch")(x).argmax(1)).float().mean()
    assert agree >= 0.9


def test_int8_is_quantized_and_agrees_on_top1():
    model = trained_like("mobilenet_v1", num_classes=5)
    x = images(24, seed=7)
    runner = make_runner(model, "openvino-int8", calib=images(48, seed=3))
    assert runner.precision.startswith("int8") and "NNCF" in runner.note
    agree = (runner(x).argmax(1) == make_runner(model, "torch")(x).argmax(1)).float().mean()
    assert agree >= 0.75


@pytest.mark.parametrize("backend", ["openvino", "openvino-int8"])
def test_changing_batch_sizes_give_each_image_its_own_logits(backend):
    # int8+bf16 with one dynamic-batch compiled model crashed the process on an AMX CPU at batch 2 then 1.
    from mobilenet.deploy import openvino

    model = trained_like("mobilenet_v2", num_classes=5)
    runner = make_runner(model, backend, calib=images(16, seed=3))
    x = images(4, seed=5)
    whole = runner(x)
    for _ in range(3):
        for n in (2, 1, 3):
            torch.testing.assert_close(runner(x[:n]), whole[:n], rtol=1e-3, atol=1e-3)
    for n in range(1, openvino.MAX_SHAPES + 3):  # more shapes than are kept: the oldest are compiled again
        assert runner(images(n, seed=n)).shape == (n, 5)
    torch.testing.assert_close(runner(x), whole, rtol=1e-3, atol=1e-3)


def test_missing_openvino_is_one_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(MobileNetError, match="pip install 'mobilenet\\[openvino\\]'"):
        make_runner(trained_like("mobilenet_v1"), "openvino")
