"""The counter against the papers' tables (../shared/papers.md) and against real forward passes."""

import pytest
import torch
from torch import nn

from mobilenet import count_cost, create_model, list_models
from mobilenet.cost import matches_printed
from mobilenet.layers import ConvBNAct, DepthwiseSeparable, LayerScale


def cost(name, **kw):
    return count_cost(create_model(name, **kw))


def test_v1_headline_exact():
    c = cost("mobilenet_v1")
    assert c.mult_adds == 568_740_352
    assert c.params == 4_231_976
    assert c.params_no_bn == 4_210_088
    # 28 layers when depthwise and pointwise count separately: conv + 13 x (dw, pw) + FC.
    assert len(c.layers) == 28


def test_v1_tf_slim_per_layer_reference():
    rows = cost("mobilenet_v1").layers
    assert (rows[0].weight_params, rows[0].mult_adds) == (864, 10_838_016)
    dw, pw = rows[1::2][:13], rows[2::2][:13]
    expected_dw = [3_612_672, 1_806_336, 3_612_672, 903_168, 1_806_336, 451_584] + [903_168] * 5 + [225_792, 451_584]
    expected_pw = [25_690_112, 25_690_112, 51_380_224, 25_690_112, 51_380_224, 25_690_112] + [51_380_224] * 5 + [
        25_690_112, 51_380_224]
    assert [r.mult_adds for r in dw] == expected_dw
    assert [r.mult_adds for r in pw] == expected_pw
    assert {r.kind for r in dw} == {"depthwise"} and {r.kind for r in pw} == {"pointwise"}
    body = rows[:-1]
    assert sum(r.weight_params for r in body) == 3_185_088
    assert sum(r.mult_adds for r in body) == 567_716_352


def test_v1_table2_shares():
    shares = cost("mobilenet_v1").by_kind()
    expected = {  # Table 2; conv 3x3 Mult-Adds is printed 1.19 %, arithmetic gives 1.91 %
        "pointwise": (94.86, 74.59), "depthwise": (3.06, 1.06), "conv": (1.91, 0.02), "linear": (0.18, 24.33)}
    for kind, (madds, params) in expected.items():
        assert round(shares[kind]["mult_adds_pct"], 2) == madds, kind
        assert round(shares[kind]["params_pct"], 2) == params, kind


@pytest.mark.parametrize("alpha, madds, params", [(1.0, 569, 4.2), (0.75, 325, 2.6), (0.5, 149, 1.3), (0.25, 41, 0.5)])
def test_v1_table6_width(alpha, madds, params):
    c = cost("mobilenet_v1", alpha=alpha)
    assert round(c.mult_adds / 1e6) == madds
    assert round(c.params / 1e6, 1) == params


@pytest.mark.parametrize("resolution, madds", [(224, 569), (192, 418), (160, 290), (128, 186)])
def test_v1_table7_resolution(resolution, madds):
    c = cost("mobilenet_v1", resolution=resolution)
    assert matches_printed(c.mult_adds / 1e6, madds)  # 290.68M is printed truncated as 290
    assert round(c.params / 1e6, 1) == 4.2


def test_v1_table4_conv_baseline():
    conv, dws = cost("mobilenet_v1_conv"), cost("mobilenet_v1")
    assert round(conv.params / 1e6, 1) == 29.3 and round(dws.params / 1e6, 1) == 4.2
    # The exact count is 4,867,293,184; the paper's 4866 is the count without the FC layer.
    assert conv.mult_adds == 4_867_293_184
    without_fc = conv.mult_adds - sum(r.mult_adds for r in conv.layers if r.kind == "linear")
    assert round(without_fc / 1e6) == 4866
    assert {r.kind for r in conv.layers} == {"conv", "linear"}
    assert 8 < conv.mult_adds / dws.mult_adds < 9  # "8 to 9 times less computation"


def test_v1_table5_shallow():
    c = cost("mobilenet_v1_shallow")
    assert round(c.mult_adds / 1e6) == 307
    assert round(c.params / 1e6, 1) == 2.9
    assert len(c.layers) == 28 - 10


def test_v1_table3_single_layer():
    std = count_cost(ConvBNAct(512, 512, 3), resolution=14)
    assert (std.mult_adds, std.params_no_bn) == (462_422_016, 2_359_296)
    sep = count_cost(DepthwiseSeparable(512, 512), resolution=14)
    assert (sep.mult_adds, sep.params_no_bn) == (52_283_392, 266_752)
    assert [r.mult_adds for r in sep.layers] == [903_168, 51_380_224]
    narrow = count_cost(DepthwiseSeparable(384, 384), resolution=14)
    assert (narrow.mult_adds, narrow.params_no_bn) == (29_578_752, 150_912)
    small = count_cost(DepthwiseSeparable(384, 384), resolution=10)
    assert (small.mult_adds, small.params_no_bn) == (15_091_200, 150_912)
    assert std.mult_adds / sep.mult_adds == pytest.approx(1 / (1 / 512 + 1 / 9))


def test_v2_headline_exact():
    c = cost("mobilenet_v2")
    assert c.mult_adds == 300_774_272
    assert c.params == 3_504_872
    assert c.params_no_bn == 3_470_760
    assert round(c.params / 1e6, 1) == 3.5 and round(c.mult_adds / 1e6) == 301


def test_v2_1_4_matches_slim_not_paper():
    c = cost("mobilenet_v2", alpha=1.4)  # slim's 6.06M / 582M; the paper prints 6.9M / 585M
    assert round(c.mult_adds / 1e6) == 582
    assert round(c.params_no_bn / 1e6, 2) == 6.06


def test_width_multiplier_is_quadratic_where_exact():
    # With alpha = 0.5 every V1 channel count halves exactly, so each pointwise layer costs exactly 1/4 and each
    # depthwise layer exactly 1/2 (eq. 6).
    full, half = cost("mobilenet_v1").layers, cost("mobilenet_v1", alpha=0.5).layers
    for a, b in zip(full, half):
        if a.kind == "pointwise":
            assert 4 * b.mult_adds == a.mult_adds
        elif a.kind == "depthwise":
            assert 2 * b.mult_adds == a.mult_adds


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_resolution_multiplier_is_quadratic_where_exact(name):
    # Doubling the side doubles every feature map exactly, so every conv costs exactly 4x (eq. 7).
    base, big = cost(name, resolution=224).layers, cost(name, resolution=448).layers
    for a, b in zip(base, big):
        assert b.mult_adds == (a.mult_adds if a.kind == "linear" else 4 * a.mult_adds)


def _hooked_sides(model, side):
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: seen.append((n, tuple(o.shape[2:]) if o.dim() == 4
                                                                           else (1, 1))))
             for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, model.in_chans, *side))
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("side", [(32, 32), (193, 193), (47, 90)])
def test_counter_sides_match_forward_pass(name, side):
    model = create_model(name, alpha=0.25, resolution=side[0])
    rows = count_cost(model, resolution=side).layers
    seen = _hooked_sides(model, side)
    # Attention rows are matrix products, not modules: no hook sees them (their sides are checked in V4's tests).
    assert [(r.name, (r.out_side, r.out_width)) for r in rows if r.kind != "attention"] == seen


def test_params_split_into_counted_layers_and_norms():
    # The counter's per-layer rows (its own walk) plus every batch norm's affine parameters and layer scale (found
    # here by type) must account for each parameter of the module exactly once.
    for name in list_models():
        model = create_model(name, alpha=0.5)
        cost = count_cost(model)
        norms = sum(p.numel() for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, LayerScale))
                    for p in m.parameters(recurse=False))
        assert sum(row.params for row in cost.layers) + norms == sum(p.numel() for p in model.parameters())


def test_cost_to_dict_and_table():
    c = cost("mobilenet_v1", alpha=0.75, resolution=160)
    d = c.to_dict()
    assert d["mult_adds"] == sum(row["mult_adds"] for row in d["layers"])
    assert d["resolution"] == 160 and d["alpha"] == 0.75
    text = c.table()
    assert "80x80x24" in text and f"{c.mult_adds:,}" in text


def test_count_cost_rejects_bad_resolution():
    with pytest.raises(ValueError, match="resolution"):
        count_cost(ConvBNAct(3, 8), resolution=0)
    with pytest.raises(ValueError, match="resolution is required"):
        count_cost(ConvBNAct(3, 8))


def test_matches_printed():
    assert matches_printed(568.74, 569) and matches_printed(290.68, 290) and not matches_printed(291.6, 290)
    assert matches_printed(1.3316, 1.3) and matches_printed(0.47, 0.5) and not matches_printed(0.44, 0.5)


def _meta_cost(name, alpha, res):
    with torch.device("meta"):
        return count_cost(create_model(name, alpha=alpha), res)


def test_checkpoint_grids_are_reproduced():
    # TF-Slim's checkpoint tables (../shared/papers.md §1.17 and §3.6): every V2 cell, and every V1 cell except the
    # misprinted MACs of α = 0.75 and of 0.25 at 192 (papers.md §7, item 5). V2 params are weights and biases without
    # BN, as TF-Slim counts them. V1's printed params (4.24M at α = 1) match no convention (weights 4.209M, with
    # biases 4.210M, with BN 4.232M), so only its MACs are checked.
    from mobilenet.models import mobilenet_v1, mobilenet_v2

    for (a, r), (_, madds, params) in mobilenet_v2.CHECKPOINTS.items():
        c = _meta_cost("mobilenet_v2", a, r)
        assert matches_printed(c.mult_adds / 1e6, madds) and matches_printed(c.params_no_bn / 1e6, params), (a, r)
    for (a, r), (_, madds, _) in mobilenet_v1.CHECKPOINTS.items():
        # Within one printed unit (α = 0.5 at 224 counts 149.497M, printed 150); the misprints are 2.8M-8.4M off.
        off = abs(_meta_cost("mobilenet_v1", a, r).mult_adds / 1e6 - madds)
        assert off > 2 if a == 0.75 or (a, r) == (0.25, 192) else off < 1, (a, r)
