"""Feature extraction on every registered model: the maps' strides and channels against ``feature_info``."""

import math

import pytest
import torch

from mobilenet import create_model, list_models
from mobilenet.errors import MobileNetError
from mobilenet.features import FeatureExtractor, stage_info

MODELS = list_models()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", [(97, 97), (64, 99)])
def test_maps_match_feature_info(name, size):
    extractor = create_model(name, features_only=True, alpha=0.25).eval()
    info = extractor.feature_info
    assert [f["reduction"] for f in info] == [2, 4, 8, 16, 32]
    assert all(set(f) >= {"num_chs", "reduction", "module"} for f in info)
    with torch.no_grad():
        maps = extractor(torch.randn(2, 3, *size))
    assert len(maps) == len(info)
    for m, f in zip(maps, info):
        # Every stride-s layer maps a side n to ceil(n / s), so a map at reduction r has side ceil(H / r).
        assert tuple(m.shape) == (2, f["num_chs"], math.ceil(size[0] / f["reduction"]),
                                  math.ceil(size[1] / f["reduction"])), f


@pytest.mark.parametrize("name", MODELS)
def test_module_names_and_intermediates_agree_with_full_model(name):
    torch.manual_seed(0)
    model = create_model(name, alpha=0.25).eval()
    captured = {}
    for f in model.feature_info:
        model.get_submodule(f["module"]).register_forward_hook(
            lambda mod, inp, out, key=f["module"]: captured.__setitem__(key, out))
    x = torch.randn(1, 3, 75, 75)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert len(maps) == 5
        for m, f in zip(maps, model.feature_info):
            assert torch.equal(m, captured[f["module"]])
        extractor = FeatureExtractor(model)  # shares the weights
        for a, b in zip(extractor(x), maps):
            assert torch.equal(a, b)


def test_out_indices_select_and_truncate():
    full = create_model("mobilenet_v2", alpha=0.5)
    ext = create_model("mobilenet_v2", alpha=0.5, features_only=True, out_indices=(1, -2))
    assert ext.out_indices == (1, 3)
    assert ext.feature_info.reduction() == [4, 16]
    # Nothing after the reduction-16 stage is kept.
    assert len(ext.features) == stage_info(full)[3]["index"] + 1
    maps = ext(torch.randn(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == ext.feature_info.channels()
    only = full.forward_intermediates(torch.randn(1, 3, 64, 64), indices=2, intermediates_only=True)
    assert len(only) == 1 and only[0].shape[-1] == 8


def test_extractor_backpropagates_to_every_kept_parameter():
    ext = create_model("mobilenet_v3_small", alpha=0.5, features_only=True)
    sum(m.mean() for m in ext(torch.randn(2, 3, 64, 64))).backward()
    assert all(p.grad is not None for p in ext.parameters())


@pytest.mark.parametrize("bad", [(5,), (0, 0), (2, 1), (-6,), ("1",), (1.0,)])
def test_bad_out_indices_are_user_errors(bad):
    with pytest.raises(MobileNetError, match="out_indices"):
        create_model("mobilenet_v1", alpha=0.25, features_only=True, out_indices=bad)


def test_out_indices_needs_features_only():
    with pytest.raises(ValueError, match="features_only"):
        create_model("mobilenet_v1", out_indices=(1,))
