"""BN folding, ONNX export with parity, the backends, int8 quantization and bad-input errors, for every model."""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

import mobilenet
from mobilenet.deploy import (
    check_matches,
    count_batch_norms,
    export_onnx,
    fold_bn,
    load_model,
    make_runner,
    model_info,
    read_info,
)
from mobilenet.deploy.fold import fold_conv_bn
from mobilenet.deploy.images import sample_images
from mobilenet.errors import MobileNetError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ALL_MODELS = mobilenet.list_models()
RES, ALPHA = 64, 0.25


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def trained_like(name: str, num_classes: int = 7, seed: int = 0, alpha: float = ALPHA, **kwargs) -> nn.Module:
    """A small model whose BN statistics, affine parameters and classifier look trained, not freshly initialised.

    Fresh BN (mean 0, var 1, γ 1, β 0) folds to the identity and a fresh classifier gives logits near 0, which would
    hide folding or export mistakes; random statistics and a unit-scale classifier make every path count.
    """
    torch.manual_seed(seed)
    model = mobilenet.create_model(name, alpha=alpha, resolution=RES, num_classes=num_classes, **kwargs)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.3, 0.3)
        elif isinstance(m, nn.Linear):  # the classifier and V3's pre-logits layer
            nn.init.normal_(m.weight, 0, 10 / m.in_features**0.5)
    return model.eval()


@functools.cache
def _images(n: int, seed: int) -> torch.Tensor:
    return sample_images(n, RES, seed=seed)[0]


def images(n: int, seed: int = 0) -> torch.Tensor:
    return _images(n, seed).clone()


# --- BN folding ---------------------------------------------------------------------------------------------------

def test_fold_conv_bn_matches_batch_norm_formula():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(6, 6, 3, padding=1, groups=3), nn.BatchNorm2d(6, eps=1e-3).eval()
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.1, 3)
    nn.init.uniform_(bn.weight, -2, 2), nn.init.uniform_(bn.bias, -1, 1)
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64)
    conv64 = conv.double()
    # The BN formula written out, in float64, as the independent reference.
    y = conv64(x)
    ref = (y - bn.running_mean.double()[:, None, None]) / torch.sqrt(bn.running_var.double()[:, None, None] + 1e-3)
    ref = ref * bn.weight.double()[:, None, None] + bn.bias.double()[:, None, None]
    fused = fold_conv_bn(conv64, bn)
    assert fused.bias is not None and fused.groups == 3
    torch.testing.assert_close(fused(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("trained", [True, False], ids=["trained", "fresh"])
def test_fold_bn_matches_eval_model(name, trained):
    model = trained_like(name) if trained else mobilenet.create_model(name, alpha=ALPHA, resolution=RES).eval()
    bns = count_batch_norms(model)
    folded = fold_bn(model)
    assert bns > 0 and count_batch_norms(folded) == 0
    assert count_batch_norms(model) == bns, "fold_bn must not modify its input"
    x = images(4)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    scale = expected.abs().max().item()
    assert not trained or scale > 1, "the test model should have non-trivial logits"
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * max(1.0, scale))


# --- ONNX export and parity ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_MODELS)
def test_export_parity_at_two_batch_sizes(name, tmp_path):
    model = trained_like(name)
    info = model_info(model, class_names=[f"c{i}" for i in range(7)], mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    path = str(tmp_path / f"{name}.onnx")
    result = export_onnx(model, path, info, num_images=4)
    assert result.max_abs_diff <= 1e-4

    # Independently: a fresh ORT session at batch 1 and 5 on other images, against eager PyTorch.
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert isinstance(session.get_inputs()[0].shape[0], str), "batch axis must be dynamic"
    for batch in (1, 5):
        x = images(batch, seed=batch)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(["logits"], {"input": x.numpy()})[0]
        assert got.shape == (batch, 7)
        assert np.abs(got - expected).max() <= 1e-4
        assert np.abs(expected).max() > 1

    proto = onnx.load(path)
    ops = [node.op_type for node in proto.graph.node]
    assert "BatchNormalization" not in ops
    # Hard-swish / hard-sigmoid as single ops: one node per module (V1/V2 have none).
    assert ops.count("HardSwish") == sum(isinstance(m, nn.Hardswish) for m in model.modules())
    assert ops.count("HardSigmoid") == sum(isinstance(m, nn.Hardsigmoid) for m in model.modules())
    stored = read_info(path)
    assert (stored.name, stored.alpha, stored.resolution, stored.num_classes) == (name, ALPHA, RES, 7)
    assert stored.class_names == info.class_names and stored.mean == (0.5, 0.4, 0.3) and stored.std == info.std


def test_export_fails_loudly_above_tolerance(tmp_path):
    model = trained_like("mobilenet_v2")
    with pytest.raises(MobileNetError, match="disagrees with PyTorch"):
        export_onnx(model, str(tmp_path / "m.onnx"), num_images=2, tolerance=1e-15)


def test_export_tolerance_grows_with_the_logits(tmp_path):
    # A trained model's logits reach 20 and more; float32 round-off grows with them (0.000427 seen on logits of 19),
    # so the 1e-4 is per unit of the largest |logit|: large logits export, a real difference still fails.
    model = trained_like("mobilenet_v2")
    with torch.no_grad():
        model.classifier.weight.mul_(40)
        scale = model(images(2)).abs().max().item()
    result = export_onnx(model, str(tmp_path / "m.onnx"), num_images=2)
    assert scale > 20 and result.max_abs_diff <= 1e-4 * scale
    with pytest.raises(MobileNetError, match="the largest \\|logit\\|"):
        export_onnx(model, str(tmp_path / "m.onnx"), num_images=2, tolerance=1e-12)


def test_export_same_padding_model(tmp_path):
    model = trained_like("mobilenet_v1", padding="same")
    assert export_onnx(model, str(tmp_path / "same.onnx"), num_images=3).max_abs_diff <= 1e-4


# --- backends -----------------------------------------------------------------------------------------------------

def test_backends_agree_with_eager(tmp_path):
    model = trained_like("mobilenet_v2")
    x = images(3)
    expected = make_runner(model, "torch")(x)
    fast = make_runner(model, "torch-fast", compile=False)
    torch.testing.assert_close(fast(x.numpy()), expected, rtol=1e-4, atol=1e-4)
    assert fast.module is not model and count_batch_norms(fast.module) == 0
    path = str(tmp_path / "v2.onnx")
    export_onnx(model, path, num_images=2)
    for runner in (make_runner(model, "onnxruntime", onnx_path=path), make_runner(None, "onnxruntime",
                                                                                  onnx_path=path)):
        torch.testing.assert_close(runner(x), expected, rtol=1e-4, atol=1e-4)


def test_torch_bf16_says_what_ran_and_agrees_on_top1():
    model = trained_like("mobilenet_v3_small", num_classes=5)
    x = images(24, seed=7)
    runner = make_runner(model, "torch-bf16", compile=False)
    assert runner.precision == ("bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32")
    out = runner(x)
    assert out.dtype == torch.float32
    assert (out.argmax(1) == make_runner(model, "torch")(x).argmax(1)).float().mean() >= 0.9


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v3_small"])
def test_torch_int8_quantizes_every_conv_and_agrees_on_top1(name):
    from mobilenet.deploy.torch_int8 import have_torchao

    if not have_torchao():
        pytest.skip("torchao is not installed")
    model = trained_like(name, num_classes=5)
    x, calib = images(24, seed=7), sample_images(48, RES, seed=3)[0]
    ref = make_runner(model, "torch")(x).argmax(1)
    reference_path = make_runner(model, "torch-int8", calib=calib, compile=False)  # dequantize, float op, quantize
    # The ops left float run in bf16 where oneDNN has bf16 kernels.
    assert reference_path.precision == ("int8+bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "int8")
    graph = reference_path.module.graph
    convs = [n for n in graph.nodes if n.target == torch.ops.aten.conv2d.default]
    # Every convolution's weight arrives dequantized from int8 (per output channel), its input from a u8 tensor.
    produced = {n.name: n for n in graph.nodes}
    assert convs and all("dequantize_per_channel" in str(produced[c.args[1].name].target) for c in convs)
    assert all("dequantize_per_tensor" in str(produced[c.args[0].name].target) for c in convs)
    assert (reference_path(x).argmax(1) == ref).float().mean() >= 0.75
    if name == "mobilenet_v1":  # the oneDNN kernels inductor fuses from the same graph agree with the reference
        fused = make_runner(model, "torch-int8", calib=calib)
        assert "inductor" in fused.note
        assert (fused(x).argmax(1) == reference_path(x).argmax(1)).float().mean() >= 0.9


def test_int8_agrees_with_fp32_top1(tmp_path):
    from mobilenet.deploy.quantize import quantize_onnx

    model = trained_like("mobilenet_v1", num_classes=5)
    fp32, int8 = str(tmp_path / "m.onnx"), str(tmp_path / "m.int8.onnx")
    export_onnx(model, fp32, num_images=2)
    quantize_onnx(fp32, int8, sample_images(48, RES, seed=3)[0])
    proto = onnx.load(int8)
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and "QLinearConv" not in ops  # QDQ format
    inits = {t.name: t for t in proto.graph.initializer}
    producer = {out: n for n in proto.graph.node for out in n.output}
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    dequant = producer[conv.input[1]]  # the weight reaches the conv through a DequantizeLinear
    w, w_scale = inits[dequant.input[0]], inits[dequant.input[1]]
    assert w.data_type == onnx.TensorProto.INT8 and list(w_scale.dims) == [w.dims[0]]  # S8, per channel
    x_zero = inits[producer[conv.input[0]].input[2]]
    assert x_zero.data_type == onnx.TensorProto.UINT8  # U8 activations
    assert read_info(int8).name == "mobilenet_v1"

    x = images(24, seed=7)
    ref = make_runner(None, "onnxruntime", onnx_path=fp32)(x).argmax(1)
    got = make_runner(model, "onnxruntime-int8", onnx_path=int8)(x).argmax(1)
    assert (ref == got).float().mean() >= 0.75
    # int8 weights are a quarter of fp32; the QDQ scales, zero points and int32 biases beside them weigh more in
    # this α = 0.25 model than at full width.
    assert (tmp_path / "m.onnx").stat().st_size > 2.5 * (tmp_path / "m.int8.onnx").stat().st_size


def test_int8_candidates_leave_exactly_the_depthwise_convs_float(tmp_path):
    from mobilenet.deploy.quantize import DEPTHWISE, GATING, _candidates, _excluded, quantize_onnx

    fp32, int8 = str(tmp_path / "v1.onnx"), str(tmp_path / "v1.int8.onnx")
    export_onnx(trained_like("mobilenet_v1", num_classes=5), fp32, num_images=2)
    source = onnx.load(fp32)
    assert len(_excluded(source, (DEPTHWISE,))) == 13  # V1's 13 depthwise separable layers
    assert _candidates(source) == [((), False), ((DEPTHWISE,), False)]  # no gating ops or hard-swish in V1
    quantize_onnx(fp32, int8, sample_images(16, RES, seed=3)[0], keep_float=(DEPTHWISE,))
    graph = onnx.load(int8).graph
    producer = {out: n.op_type for n in graph.node for out in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    grouped = [n for n in convs if next((a.i for a in n.attribute if a.name == "group"), 1) > 1]
    # Depthwise weights arrive as float initializers, every other conv's through a DequantizeLinear.
    assert len(grouped) == 13 and all(n.input[1] not in producer for n in grouped)
    assert all(producer.get(n.input[1]) == "DequantizeLinear" for n in convs if n not in grouped)
    v3 = str(tmp_path / "v3.onnx")
    export_onnx(mobilenet.create_model("mobilenet_v3_small", num_classes=5).eval(), v3, num_images=2)
    assert _candidates(onnx.load(v3)) == [((), False), (GATING, False), ((*GATING, DEPTHWISE), False), ((), True)]


def test_split_hardswish_is_the_same_function_and_runs_int8(tmp_path):
    import onnxruntime as ort

    from mobilenet.deploy.quantize import quantize_onnx, split_hardswish

    fp32 = str(tmp_path / "v3.onnx")
    export_onnx(trained_like("mobilenet_v3_small", num_classes=5), fp32, num_images=2)
    source = onnx.load(fp32)
    split = split_hardswish(source)
    kinds = [n.op_type for n in split.graph.node]
    assert "HardSwish" not in kinds and kinds.count("Clip") == [n.op_type for n in source.graph.node].count(
        "HardSwish")
    x = images(4, seed=2).numpy()
    run = {name: ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"])
           for name, g in (("hardswish", source), ("split", split))}
    outs = {name: r.run(None, {"input": x})[0] for name, r in run.items()}
    np.testing.assert_allclose(outs["split"], outs["hardswish"], rtol=1e-5, atol=1e-5)
    int8 = str(tmp_path / "v3.int8.onnx")
    quantize_onnx(fp32, int8, sample_images(16, RES, seed=3)[0], keep_float=(), split_hardswish=True)
    quantized = onnx.load(int8)
    assert "hard-swish as int8" in {p.key: p.value for p in quantized.metadata_props}["mobilenet.precision"]
    # The "* 1/6" is folded into the product's quantization scale: no int8 pass of its own.
    assert not [n for n in quantized.graph.node if n.name.startswith("hardswish") and n.name.endswith("_scale")]
    # ONNX Runtime fuses the quantized Add and Mul into int8 kernels: no float hard-swish math is left.
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(int8, opts, providers=["CPUExecutionProvider"])
    fused = {n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node}
    assert {"QLinearAdd", "QLinearMul"} <= fused and not fused & {"HardSwish", "Clip"}
    agree = (make_runner(None, "onnxruntime-int8", onnx_path=int8)(x).argmax(1)
             == make_runner(None, "onnxruntime", onnx_path=fp32)(x).argmax(1)).float().mean()
    assert agree >= 0.75


# --- bad input ----------------------------------------------------------------------------------------------------

def test_missing_checkpoint_and_weights(tmp_path):
    with pytest.raises(MobileNetError, match="does not exist"):
        load_model(checkpoint=str(tmp_path / "missing.pt"))
    with pytest.raises(MobileNetError, match="not found"):
        load_model("mobilenet_v1", weights=str(tmp_path / "missing.safetensors"))


def test_weights_round_trip_safetensors(tmp_path):
    from safetensors.torch import save_file

    model = trained_like("mobilenet_v1")
    path = str(tmp_path / "w.safetensors")
    save_file(model.state_dict(), path)
    loaded, info = load_model("mobilenet_v1", weights=path, alpha=ALPHA, resolution=RES, num_classes=7)
    x = images(2)
    torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(MobileNetError, match="does not fit"):
        load_model("mobilenet_v1", weights=path, alpha=0.75, resolution=RES, num_classes=7)


def test_onnx_from_another_model_is_refused(tmp_path):
    v1, v2 = trained_like("mobilenet_v1"), trained_like("mobilenet_v2")
    path = str(tmp_path / "v1.onnx")
    export_onnx(v1, path, num_images=2)
    with pytest.raises(MobileNetError, match="holds mobilenet_v1"):
        make_runner(v2, "onnxruntime", onnx_path=path)
    with pytest.raises(MobileNetError, match="holds mobilenet_v1"):
        check_matches(path, model_info(v2))
    with pytest.raises(MobileNetError, match="int8"):
        make_runner(v1, "onnxruntime-int8", onnx_path=path)
    foreign = tmp_path / "foreign.onnx"
    proto = onnx.load(path)
    del proto.metadata_props[:]
    onnx.save(proto, str(foreign))
    with pytest.raises(MobileNetError, match="not exported by"):
        make_runner(v1, "onnxruntime", onnx_path=str(foreign))
    with pytest.raises(MobileNetError, match="does not exist"):
        make_runner(v1, "onnxruntime", onnx_path=str(tmp_path / "none.onnx"))


@pytest.mark.parametrize("backend", ["torch", "torch-fast"])
def test_wrong_channel_count_is_one_clear_error(backend):
    runner = make_runner(trained_like("mobilenet_v2"), backend, compile=False)
    with pytest.raises(MobileNetError, match="3-channel images, got 1"):
        runner(np.zeros((2, 1, RES, RES), np.float32))
    with pytest.raises(MobileNetError, match=r"\(B, C, H, W\)"):
        runner(torch.zeros(3, RES, RES))


def test_cli_errors_are_one_line(tmp_path, capsys):
    from mobilenet.cli.main import main

    assert main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mobilenet export: error:") and "nope.pt" in err and "\n" not in err
    assert main(["export", "mobilenet_v1", "--weights", str(tmp_path / "w.pt"), "--out", "x.onnx"]) == 2
    assert "\n" not in capsys.readouterr().err.strip()


def test_cli_export_and_quantize(tmp_path, capsys):
    from mobilenet.cli.main import main

    out = tmp_path / "v3.onnx"
    assert main(["export", "mobilenet_v3_small", "--alpha", "0.5", "--resolution", "64", "--num-classes", "12",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "max |logit difference|" in text and read_info(str(out)).num_classes == 12
    int8 = tmp_path / "v1.int8.onnx"
    assert main(["quantize", "mobilenet_v1", "--alpha", "0.25", "--resolution", "32", "--num-classes", "12",
                 "--calib", "shapes", "--calib-size", "32", "--val-size", "32", "--out", str(int8)]) == 0
    text = capsys.readouterr().out
    assert "top-1 fp32" in text and "delta" in text and "ratio" in text and int8.exists()
    tflite = tmp_path / "v1.int8.tflite"
    if importlib.util.find_spec("ai_edge_litert") is not None:
        assert main(["quantize", "mobilenet_v1", "--alpha", "0.25", "--resolution", "32", "--num-classes", "12",
                     "--calib", "shapes", "--calib-size", "32", "--val-size", "32", "--out", str(tflite)]) == 0
        text = capsys.readouterr().out
        assert "top-1 fp32" in text and tflite.read_bytes()[4:8] == b"TFL3"  # the flatbuffer's file identifier


@pytest.mark.slow
def test_torch_fast_compiled_matches_eager():
    model = trained_like("mobilenet_v3_small")
    runner = make_runner(model, "torch-fast")
    x = images(2)
    torch.testing.assert_close(runner(x), model(x), rtol=1e-4, atol=1e-4)
    assert "torch.compile" in runner.note


@pytest.mark.slow
def test_many_compiled_runners_all_stay_compiled():
    # Dynamo caches per code object, which every model's forward shares; past its default of 8 entries the later
    # runners of a benchmark would silently run eager.
    from torch._dynamo.utils import counters

    counters.clear()
    for i in range(10):
        name = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large")[i % 3]
        make_runner(trained_like(name), "torch-fast" if i % 2 else "torch-bf16")(images(1))
    assert counters["frames"]["ok"] == counters["frames"]["total"] >= 10


@pytest.mark.slow
def test_shapes_past_the_specialised_ones_share_one_dynamic_graph(monkeypatch):
    from torch._dynamo.utils import counters

    import mobilenet.deploy.backends as backends

    monkeypatch.setattr(backends, "STATIC_SHAPES", 2)
    model = trained_like("mobilenet_v1")
    runner = make_runner(model, "torch-fast")
    counters.clear()
    # 2 and 3: a graph each; 5 and 7: one graph with a dynamic batch axis; 3 again: its own graph. (One graph that
    # turns dynamic at the second shape, dynamo's default, would compile twice.)
    for n in (2, 3, 5, 7, 3):
        x = images(n)
        torch.testing.assert_close(runner(x), model(x), rtol=1e-4, atol=1e-4)
    assert counters["frames"]["ok"] == 3 and "torch.compile" in runner.note


@pytest.mark.slow
def test_caller_grad_mode_does_not_compile_again():
    # Dynamo guards on the input's dispatch keys, which differ between inference and normal tensors: a benchmark
    # timing in inference mode and then profiling outside it compiled the graph twice, the second time inside the
    # profiled pass.
    from torch._dynamo.utils import counters

    model = trained_like("mobilenet_v1")
    runner = make_runner(model, "torch-fast")
    counters.clear()
    x = images(2)
    with torch.inference_mode():
        first = runner(x)
    with torch.no_grad():
        torch.testing.assert_close(runner(x), first)
    torch.testing.assert_close(runner(x.numpy()), first)
    assert counters["frames"]["ok"] == 1
