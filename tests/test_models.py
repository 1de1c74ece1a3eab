"""Registry-wide behaviour: every registered model is tested the day it is registered."""

import math

import pytest
import torch

from mobilenet import create_model, list_models
from mobilenet.models import MobileNet

MODELS = list_models()


def test_registry_lists_the_paper_models():
    assert {"mobilenet_v1", "mobilenet_v1_conv", "mobilenet_v1_shallow", "mobilenet_v2"} <= set(MODELS)
    assert list_models("mobilenet_v1*") == [m for m in MODELS if m.startswith("mobilenet_v1")]
    assert list_models("nothing*") == []


# MobileNetV4's medium and large models take 15-20 s each at 193 px with gradients; 32 px covers them by default.
_HEAVY = {n for n in MODELS if n.startswith("mobilenet_v4") and n != "mobilenet_v4_conv_small"}


@pytest.mark.parametrize("side, name", [pytest.param(side, name, marks=[pytest.mark.slow] if side == 193
                                                     and name in _HEAVY else []) for side in (32, 193)
                                        for name in MODELS])
def test_output_shape_no_nan_and_gradients(name, side):
    torch.manual_seed(0)
    model = create_model(name, alpha=0.5, num_classes=7, resolution=side)
    x = torch.randn(2, 3, side, side)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


@pytest.mark.parametrize("name", MODELS)
def test_default_width_at_odd_resolution(name):
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 97, 97))
        assert feats.shape[-2:] == (4, 4)  # 97 -> 49 -> 25 -> 13 -> 7 -> 4: ceil(n / 2) per stride
        assert model.forward_head(feats).shape == (1, 3)
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.num_features)


@pytest.mark.parametrize("name", MODELS)
def test_tiny_input_side_one(name):
    model = create_model(name, alpha=0.25, num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 1, 1)).shape == (1, 5)


@pytest.mark.parametrize("name", MODELS)
def test_common_api(name):
    model = create_model(name, alpha=0.75, rho=6 / 7, in_chans=1, num_classes=10)
    assert isinstance(model, MobileNet)
    assert model.name == name and model.alpha == 0.75 and model.resolution == 192
    model.reset_classifier(4)
    assert model.num_classes == 4
    assert model(torch.randn(2, 1, 40, 40)).shape == (2, 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": 0}, "alpha must be"),
        ({"alpha": -1.0}, "alpha must be"),
        ({"alpha": math.nan}, "alpha must be"),
        ({"alpha": "1"}, "alpha must be"),
        ({"resolution": 0}, "resolution must be an integer"),
        ({"resolution": 22.5}, "resolution must be an integer"),
        ({"rho": 0}, "rho must be"),
        ({"rho": 0.5, "resolution": 112}, "either resolution or rho"),
        ({"num_classes": 0}, "num_classes must be"),
        ({"in_chans": 0}, "in_chans must be"),
        ({"dropout": 1.0}, "dropout must be"),
        ({"rounding": "banker"}, "unknown rounding policy 'banker'"),
    ],
)
@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_bad_arguments_raise_value_error(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_model(name, **kwargs)


def test_unknown_model_names_closest():
    with pytest.raises(ValueError, match="did you mean mobilenet_v2"):
        create_model("mobilenet_v22")
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        create_model("resnet50")


def test_rho_resolves_to_rounded_resolution():
    assert create_model("mobilenet_v1", rho=0.714).resolution == 160
    assert create_model("mobilenet_v1", rho=4 / 7).resolution == 128


def test_v1_structure_follows_table1():
    model = create_model("mobilenet_v1")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels == 32 and convs[0].stride == (2, 2) and convs[0].kernel_size == (3, 3)
    dws = [c for c in convs if c.groups > 1]
    assert len(dws) == 13
    assert [c.stride[0] for c in dws] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]  # last one: the erratum
    assert model.published == {"top1": 70.6, "mult_adds_m": 569, "params_m": 4.2}


def test_v2_structure_follows_table2():
    model = create_model("mobilenet_v2")
    blocks = list(model.features)[1:-1]
    assert len(blocks) == 17  # the n column; the text's "19" is a known misprint
    assert isinstance(blocks[0].expand, torch.nn.Identity)  # t = 1
    assert sum(b.use_residual for b in blocks) == 10
    assert [b.out_chs for b in blocks] == [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320]
    assert model.num_features == 1280
    assert create_model("mobilenet_v2", alpha=0.5).num_features == 1280  # not scaled below 1
    assert create_model("mobilenet_v2", alpha=1.4).num_features == 1792


def test_seeded_construction_is_deterministic():
    torch.manual_seed(3)
    a = create_model("mobilenet_v2", alpha=0.35)
    torch.manual_seed(3)
    b = create_model("mobilenet_v2", alpha=0.35)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("name", MODELS)
def test_every_builder_documents_every_common_argument(name):
    from mobilenet.models.base import ARG_DOCS
    from mobilenet.models.registry import get_builder

    doc = get_builder(name).__doc__ or ""
    args = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    missing = [arg for arg in ARG_DOCS if f"\n        {arg}: " not in args]
    assert not missing, f"{name}'s docstring does not describe {missing}"
