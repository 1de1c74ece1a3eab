"""Weight conversion against independent references.

* torchvision and timm cannot be imported here, so the tests rebuild their module structure (the files named in
  mobilenet/convert/torchvision.py and timm.py) as small replicas whose ``state_dict()`` has their exact key names;
  the published parameter counts prove each replica is the published architecture, and its forward pass is the
  reference the converted model must reproduce.
* Keras 3 runs on the PyTorch backend, so Keras' own MobileNets are built, saved and converted, and the logits
  compared on scikit-image's sample photos.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before anything imports keras

import math
from functools import partial

import numpy as np
import pytest
import torch
from reference_layouts import TV_LARGE, TV_SMALL, timm_v1, timm_v2, timm_v3, timm_v4, tv_v2, tv_v3
from torch import nn

from mobilenet import count_cost, create_model
from mobilenet.cli.main import main
from mobilenet.convert import export_weights, import_weights, source_model
from mobilenet.errors import MobileNetError
from mobilenet.layers import SamePad2d
from mobilenet.models.pretrained import options_to_kwargs


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model.eval()


# (library, model name, replica, published parameter count)
REFERENCES = [
    ("torchvision", "mobilenet_v2", tv_v2, 3_504_872),
    ("torchvision", "mobilenet_v3_large", partial(tv_v3, TV_LARGE, 1280), 5_483_032),
    ("torchvision", "mobilenet_v3_small", partial(tv_v3, TV_SMALL, 1024), 2_542_856),
    ("timm", "mobilenetv1_100", timm_v1, 4_231_976),
    ("timm", "mobilenetv2_100", timm_v2, 3_504_872),
    ("timm", "mobilenetv3_large_100", partial(timm_v3, False), 5_483_032),
    ("timm", "mobilenetv3_small_100", partial(timm_v3, True), 2_542_856),
]
IDS = [name for _, name, _, _ in REFERENCES]


@pytest.mark.parametrize("library, name, make, params", REFERENCES, ids=IDS)
def test_reference_layout_imports_exactly(library, name, make, params, tmp_path):
    ref = _randomise(make())
    assert sum(p.numel() for p in ref.parameters()) == params  # the replica is the published architecture
    path = tmp_path / "ref.pth"
    torch.save(ref.state_dict(), path)
    model, info = import_weights(path, library, name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)
        assert (model(x) - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())
    assert sum(p.numel() for p in model.parameters()) == params
    # And back: exactly the reference state dict, every key (BN counters included) and every value.
    back, original = export_weights(model, library, name), ref.state_dict()
    assert list(back) == list(original) or set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) for k in original)


@pytest.mark.parametrize("library, name", [("torchvision", "mobilenet_v2"), ("timm", "mobilenetv2_050"),
                                           ("timm", "mobilenetv1_100"), ("torchvision", "mobilenet_v3_small"),
                                           ("timm", "mobilenetv3_large_100")])
def test_round_trip_ours_to_source_layout_is_exact(library, name, tmp_path):
    spec = source_model(library, name)
    ours = _randomise(create_model(spec.model, alpha=spec.alpha or 1.0, **options_to_kwargs(spec.options)))
    path = tmp_path / "theirs.pth"
    export_weights(ours, library, name, path)
    again, _ = import_weights(path, library, name)
    a, b = ours.state_dict(), again.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_width_is_inferred_and_bn_eps_compensated(tmp_path):
    ref = _randomise(tv_v2(width=0.5))
    path = tmp_path / "v2_050.pth"
    torch.save(ref.state_dict(), path)
    model, info = import_weights(path, "torchvision", "mobilenet_v2")
    assert info["options"]["alpha"] == 0.5 and model.alpha == 0.5
    # Our weights with BN eps 1e-3 exported to torchvision (eps 1e-5): the running variance absorbs the difference.
    ours = _randomise(create_model("mobilenet_v2", alpha=0.5, norm_layer=partial(nn.BatchNorm2d, eps=1e-3)))
    ref = tv_v2(width=0.5).eval()
    ref.load_state_dict(export_weights(ours, "torchvision", "mobilenet_v2"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ref(x), ours(x), atol=1e-5, rtol=1e-4)


def test_mismatches_are_one_clear_error(tmp_path):
    sd = _randomise(tv_v2()).state_dict()
    path = tmp_path / "v2.pth"
    torch.save(sd, path)
    with pytest.raises(MobileNetError, match="no 'classifier.weight'.*mobilenetv2_100"):
        import_weights(path, "timm", "mobilenetv2_100")
    with pytest.raises(MobileNetError, match=r"shape mismatch: features\.0\.0\.weight \(32, 3, 3, 3\)"):
        import_weights(path, "torchvision", "mobilenet_v2", alpha=0.5)
    broken = dict(sd, **{"extra.weight": torch.zeros(1)})
    del broken["features.3.conv.1.1.running_var"]
    torch.save(broken, path)
    with pytest.raises(MobileNetError, match=r"1 missing from the source: features\.3\.conv\.1\.1\.running_var \| "
                                             r"1 not used by the map: extra\.weight"):
        import_weights(path, "torchvision", "mobilenet_v2")
    with pytest.raises(MobileNetError, match="no map for timm model 'mobilenetv2_999'"):
        import_weights(path, "timm", "mobilenetv2_999")
    same = create_model("mobilenet_v2", padding="same")
    with pytest.raises(MobileNetError, match="padding symmetric, these weights need same"):
        export_weights(same, "torchvision", "mobilenet_v2")


def test_tf_same_padding_matches_tensorflow_rule():
    from mobilenet.layers import ConvBNAct
    with pytest.raises(ValueError, match="padding must be one of symmetric, same"):
        ConvBNAct(3, 8, padding="valid")
    assert not hasattr(ConvBNAct(3, 8, 3, 1, padding="same"), "pad")  # stride 1, odd kernel: symmetric already
    for k in (1, 3, 5):
        for s in (1, 2):
            pad = SamePad2d(k, s)
            for n in range(1, 40):
                total = max((math.ceil(n / s) - 1) * s + k - n, 0)  # TF's rule
                left, right, top, bottom = pad.pads(n, n)
                assert (top, bottom) == (total // 2, total - total // 2) == (left, right)
                conv = nn.Conv2d(1, 1, k, s)
                assert conv(pad(torch.zeros(1, 1, n, n))).shape[-1] == math.ceil(n / s)


def test_cost_counter_follows_dynamic_padding():
    model = create_model("mobilenet_v3_small", padding="same").eval()
    sides = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, name=name: sides.__setitem__(name, tuple(o.shape[-2:])))
             for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 97, 83))
    for h in hooks:
        h.remove()
    rows = {r.name: (r.out_side, r.out_width) for r in count_cost(model, (97, 83)).layers}
    assert {n: rows[n] for n in sides if n in rows} == {n: s for n, s in sides.items() if n in rows}
    assert len([n for n in sides if n in rows]) > 40


# --- Keras 3 on the PyTorch backend ------------------------------------------------------------------------------

# The default run converts one Keras model (V1 α = 0.25 at 128, with 1001 classes, below); the rest are slow.
SLOW_KERAS = [("MobileNet", 0.25, 128, ".weights.h5"), ("MobileNetV3Small", 1.0, 224, ".h5"),
              ("MobileNet", 1.0, 224, ".h5"), ("MobileNet", 1.0, 128, ".weights.h5"),
              ("MobileNet", 0.25, 224, ".keras"), ("MobileNetV2", 1.0, 224, ".weights.h5"),
              ("MobileNetV2", 0.35, 224, ".h5"), ("MobileNetV2", 0.35, 128, ".keras"),
              ("MobileNetV3Large", 1.0, 224, ".weights.h5"), ("MobileNetV3Small", 1.0, 224, ".weights.h5")]


def _photos(side: int) -> np.ndarray:
    """scikit-image's sample photos (astronaut, cat, coffee) resized to side × side, 0..255 float RGB."""
    data = pytest.importorskip("skimage.data")
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(f()).convert("RGB").resize((side, side), Image.BILINEAR),
                                dtype=np.float32) for f in (data.astronaut, data.chelsea, data.coffee)])


def _keras_model(which: str, alpha: float, side: int, path, classes: int = 1000):
    keras = pytest.importorskip("keras")
    pytest.importorskip("h5py")
    if keras.backend.backend() != "torch":
        pytest.skip("Keras runs on another backend in this process")
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, which)(weights=None, alpha=alpha, input_shape=(side, side, 3),
                                               classes=classes, classifier_activation=None)
    rng = np.random.default_rng(0)
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in model.layers:  # random BN scales/shifts and biases, so every tensor matters
        w = layer.get_weights()
        if layer in batch_norms:
            layer.set_weights([rng.uniform(0.5, 1.5, w[0].shape), rng.normal(0, 0.2, w[1].shape), w[2], w[3]])
            layer.momentum = 0.0
        elif len(w) == 2:
            layer.set_weights([w[0], rng.normal(0, 0.2, w[1].shape)])
    # BN statistics measured on the photos (one training-mode pass with momentum 0), as a trained network has
    # them: with arbitrary statistics the activations collapse and every image gets nearly the same logits.
    model(_model_input(which, _photos(side)), training=True)
    for layer in batch_norms:
        layer.momentum = 0.99
    if str(path).endswith(".weights.h5"):
        model.save_weights(path)
    else:
        model.save(path)
    return model


def _model_input(which: str, x: np.ndarray) -> np.ndarray:
    # Keras V1/V2 take preprocess_input's [-1, 1]; V3 rescales 0..255 itself.
    return x if which.startswith("MobileNetV3") else x / 127.5 - 1


def _keras_logits(model, x: np.ndarray) -> np.ndarray:
    import keras
    return keras.ops.convert_to_numpy(model(x, training=False))


def _keras_parity(which, alpha, side, suffix, tmp_path):
    path = tmp_path / f"{which}{suffix}"
    km = _keras_model(which, alpha, side, path)
    x = _photos(side)
    expected = _keras_logits(km, _model_input(which, x))
    assert np.abs(expected[0] - expected[1]).max() > 0.1  # the images get different logits: a meaningful check
    model, info = import_weights(path, "keras", which)
    assert info["options"]["alpha"] == alpha and info["options"]["padding"] == "same"
    if suffix != ".weights.h5":  # full-model files carry their input shape
        assert model.resolution == side
    mean, std = (torch.tensor(info["preprocessing"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    images = (torch.from_numpy(x / 255).permute(0, 3, 1, 2).float() - mean) / std
    with torch.no_grad():
        got = model(images).numpy()
    assert np.abs(got - expected).max() <= 1e-4
    return model, images, expected


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("which, alpha, side, suffix", SLOW_KERAS)
def test_keras_logits_match_full_matrix(which, alpha, side, suffix, tmp_path):
    _keras_parity(which, alpha, side, suffix, tmp_path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_keras_1001_classes_drop_background_and_cli(tmp_path, capsys):
    path = tmp_path / "v1_1001.weights.h5"
    km = _keras_model("MobileNet", 0.25, 128, path, classes=1001)
    out = tmp_path / "v1.safetensors"
    assert main(["convert", str(path), "--from", "keras", "--model", "MobileNet", "--out", str(out)]) == 0
    assert "background logit dropped" in capsys.readouterr().out
    model = create_model("mobilenet_v1", weights=out)
    assert model.num_classes == 1000 and model.preprocessing["mean"] == (0.5, 0.5, 0.5)
    x = _photos(128)
    expected = _keras_logits(km, x / 127.5 - 1)[:, 1:]
    assert np.abs(expected[0] - expected[1]).max() > 0.1  # the images get different logits: a meaningful check
    images = torch.from_numpy(x / 127.5 - 1).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        assert np.abs(model.eval()(images).numpy() - expected).max() <= 1e-4
        # Control: the same weights with PyTorch's symmetric padding are visibly off, so the check has teeth.
        plain = create_model("mobilenet_v1", alpha=0.25, act_layer=nn.ReLU6, rounding="keras",
                             norm_layer=partial(nn.BatchNorm2d, eps=1e-3)).eval()
        plain.load_state_dict(model.state_dict())
        assert np.abs(plain(images).numpy() - expected).max() > 1e-2
    # Wrong --model: one line on stderr, status 2.
    assert main(["convert", str(path), "--from", "keras", "--model", "MobileNetV2", "--out", str(out)]) == 2
    assert "is this the right --model?" in capsys.readouterr().err
    # Keras weights have TF padding, which torchvision's V2 cannot express: refused, not silently wrong.
    assert main(["convert", str(out), "--to", "timm", "--model", "mobilenetv1_100", "--out",
                 str(tmp_path / "t.pth")]) == 2
    assert "padding" in capsys.readouterr().err


def test_cli_round_trip_through_torchvision(tmp_path, capsys):
    ref = _randomise(tv_v2())
    src = tmp_path / "mobilenet_v2.pth"
    torch.save(ref.state_dict(), src)
    ours, back = tmp_path / "ours.safetensors", tmp_path / "back.pth"
    assert main(["convert", str(src), "--from", "torchvision", "--model", "mobilenet_v2", "--out", str(ours)]) == 0
    assert main(["convert", str(ours), "--to", "torchvision", "--model", "mobilenet_v2", "--out", str(back)]) == 0
    again = torch.load(back, weights_only=True)
    assert set(again) == set(ref.state_dict())
    assert all(torch.equal(again[k], v) for k, v in ref.state_dict().items())
    assert "3,504,872 params" in capsys.readouterr().out


# timm publishes MobileNetV4 parameter counts in millions (../shared/papers.md §5).
TIMM_V4_PARAMS_M = {"mobilenetv4_conv_small": 3.77, "mobilenetv4_conv_medium": 9.72, "mobilenetv4_conv_large": 32.59,
                    "mobilenetv4_hybrid_medium": 11.07, "mobilenetv4_hybrid_large": 37.76}
_SLOW_V4 = {"mobilenetv4_conv_large", "mobilenetv4_hybrid_large"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if n in _SLOW_V4 else [])
                                  for n in TIMM_V4_PARAMS_M])
def test_timm_v4_replica_imports_and_exports_exactly(name, tmp_path):
    ref = _randomise(timm_v4(name))
    with torch.no_grad():
        for m in ref.modules():  # layer scale far from its 1e-5 start, so a lost gamma shows in the logits
            if hasattr(m, "gamma"):
                m.gamma.uniform_(0.5, 1.5)
    params = sum(p.numel() for p in ref.parameters())
    assert round(params / 1e6, 2) == TIMM_V4_PARAMS_M[name]  # the replica is timm's published architecture
    path = tmp_path / "ref.pth"
    torch.save(ref.state_dict(), path)
    model, _ = import_weights(path, "timm", name)
    assert sum(p.numel() for p in model.parameters()) == params
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)
        assert (model(x) - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())
    back = export_weights(model, "timm", name, tmp_path / "back.safetensors")
    original = ref.state_dict()
    assert set(back) == set(original) and all(torch.equal(back[k], original[k]) for k in original)
    again, _ = import_weights(tmp_path / "back.safetensors", "timm", name)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))  # the round trip gives identical logits
