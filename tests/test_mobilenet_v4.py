"""MobileNetV4 against the published numbers (../shared/papers.md §5), timm's layout and independent counts."""

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mobilenet import count_cost, create_model
from mobilenet.cost import matches_printed
from mobilenet.layers import MultiQueryAttention
from mobilenet.models import published_table
from mobilenet.models.mobilenet_v4 import MobileMQA, UniversalInvertedBottleneck

sys.path.insert(0, str(Path(__file__).parent))
from reference_layouts import timm_v4  # noqa: E402

V4 = ["mobilenet_v4_conv_small", "mobilenet_v4_conv_medium", "mobilenet_v4_conv_large",
      "mobilenet_v4_hybrid_medium", "mobilenet_v4_hybrid_large"]
# timm's published parameter counts (millions) and the input size its top-1 is published at.
TIMM_PARAMS_M = dict(zip(V4, (3.77, 9.72, 32.59, 11.07, 37.76)))
PUBLISHED_SIZE = dict(zip(V4, (224, 224, 384, None, 384)))
SLOW = {"mobilenet_v4_conv_large", "mobilenet_v4_hybrid_large"}


def _params(v):
    return [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in v]


def _meta(name, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


@pytest.mark.parametrize("name", V4)
def test_params_match_timm_and_the_paper(name):
    params = count_cost(_meta(name)).params
    # Exact: the replica of timm's layout (tests/reference_layouts.py, transcribed from timm's arch strings, not from
    # our tables) has the same count; rounded: timm's published millions.
    assert params == sum(p.numel() for p in timm_v4(name.replace("mobilenet_v4", "mobilenetv4")).parameters())
    assert round(params / 1e6, 2) == TIMM_PARAMS_M[name]
    if name == "mobilenet_v4_conv_small":
        assert round(params / 1e6, 1) == 3.8  # the paper's 3.8M


def test_conv_small_mult_adds_match_the_paper():
    # The paper prints Conv-S at 0.2G MACs (224×224).
    assert matches_printed(count_cost(_meta("mobilenet_v4_conv_small")).mult_adds / 1e9, 0.2)


def _hooked_mult_adds(model, side):
    """Mult-Adds from a real forward pass: each conv/linear's weights times its output positions, plus Q·Kᵀ and A·V
    from the shapes each attention layer actually sees (an independent count of the convention in cost.py)."""
    total, keys = [0], {}

    def layer(mod, inp, out):
        total[0] += mod.weight.numel() * (out.shape[2] * out.shape[3] if out.dim() == 4 else 1)

    def attention(mod, inp, out):
        n, (d, m) = inp[0].shape[2] * inp[0].shape[3], keys[mod]
        total[0] += 2 * n * m * mod.heads * d

    hooks = []
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            hooks.append(mod.register_forward_hook(layer))
        elif isinstance(mod, MultiQueryAttention):
            hooks.append(mod.register_forward_hook(attention))
            hooks.append(mod.key.register_forward_hook(
                lambda k, i, o, a=mod: keys.__setitem__(a, (o.shape[1], o.shape[2] * o.shape[3]))))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, side, side))
    for h in hooks:
        h.remove()
    return total[0]


@pytest.mark.parametrize("name", _params(V4))
def test_mult_adds_at_224_and_published_size_equal_a_forward_count(name):
    model = create_model(name)
    for side in sorted({224, PUBLISHED_SIZE[name] or 224}):
        assert _hooked_mult_adds(model, side) == count_cost(model, side).mult_adds, side


def test_attention_rows_follow_the_formula():
    model = create_model("mobilenet_v4_hybrid_medium")
    rows = [r for r in count_cost(model, 224).layers if r.kind == "attention"]
    assert len(rows) == 8 and all(r.params == 0 for r in rows)
    # Stage 3 (14×14) attends over keys reduced to 7×7; stage 4 (7×7) over all 49 positions; 4 heads of 64.
    assert [r.mult_adds for r in rows] == [196 * 49 * 4 * 64 * 2] * 4 + [49 * 49 * 4 * 64 * 2] * 4


def test_multi_query_attention_matches_per_head_reference():
    torch.manual_seed(0)
    attn = MultiQueryAttention(16, 16, heads=3, key_dim=8, kv_stride=2).eval()
    x = torch.randn(2, 16, 6, 5)
    q = attn.query(x).reshape(2, 3, 8, 30)
    k, v = attn.key(x).flatten(2), attn.value(x).flatten(2)  # (B, 8, 9): one key and value for every head
    heads = []
    for h in range(3):
        weights = torch.softmax(q[:, h].transpose(1, 2) @ k / math.sqrt(8), dim=-1)  # (B, 30, 9)
        heads.append((weights @ v.transpose(1, 2)).transpose(1, 2))  # (B, 8, 30)
    expected = attn.output(torch.cat(heads, 1).reshape(2, 24, 6, 5))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected)


def test_uib_instantiations_and_strides():
    model = create_model("mobilenet_v4_conv_medium")
    kinds = [b.kind for b in model.features if isinstance(b, UniversalInvertedBottleneck)]
    assert set(kinds) == {"ExtraDW", "ConvNext", "FFN"}
    for block in model.features:
        if isinstance(block, UniversalInvertedBottleneck):
            present = (not isinstance(block.dw_start, nn.Identity), not isinstance(block.dw_mid, nn.Identity))
            assert present == {"ExtraDW": (True, True), "IB": (False, True), "ConvNext": (True, False),
                               "FFN": (False, False)}[block.kind]
    small = [b.kind for b in create_model("mobilenet_v4_conv_small").features
             if isinstance(b, UniversalInvertedBottleneck)]
    assert small.count("IB") == 8 and small.count("ExtraDW") == 3 and small.count("ConvNext") == 1


def test_hybrids_have_layer_scale_and_mqa_conv_models_do_not():
    hybrid, conv = create_model("mobilenet_v4_hybrid_large"), create_model("mobilenet_v4_conv_large")
    assert sum(isinstance(m, MobileMQA) for m in hybrid.modules()) == 8
    assert any(isinstance(m, nn.GELU) for m in hybrid.modules())
    gammas = [p for n, p in hybrid.named_parameters() if n.endswith("layer_scale.gamma")]
    assert gammas and all(torch.all(g == 1e-5) for g in gammas)
    assert not any(n.endswith("gamma") for n, _ in conv.named_parameters())


@pytest.mark.parametrize("name, channels", [("mobilenet_v4_conv_small", [32, 32, 64, 96, 960]),
                                            ("mobilenet_v4_hybrid_medium", [32, 48, 80, 160, 960])])
def test_features_only(name, channels):
    # The table's width at the end of each reduction (timm reports the same feature_info).
    ext = create_model(name, features_only=True).eval()
    assert ext.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert ext.feature_info.channels() == channels
    with torch.no_grad():
        maps = ext(torch.randn(1, 3, 96, 80))
    assert [tuple(m.shape[1:]) for m in maps] == [(c, math.ceil(96 / r), math.ceil(80 / r))
                                                  for c, r in zip(channels, [2, 4, 8, 16, 32])]


def test_published_metadata_and_any_alpha():
    assert create_model("mobilenet_v4_conv_small").published == {"top1": 73.8, "mult_adds_m": 200, "params_m": 3.8}
    # timm's top-1 for its released weights joins the registry's published table (what search uses).
    assert published_table("mobilenet_v4_conv_large") == {(1.0, 384): (82.952, None, 32.59)}
    assert create_model("mobilenet_v4_conv_large").published is None
    narrow = create_model("mobilenet_v4_hybrid_medium", alpha=0.5, num_classes=3)
    assert narrow(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    assert count_cost(narrow).mult_adds < count_cost(_meta("mobilenet_v4_hybrid_medium")).mult_adds / 3


def test_onnx_export_parity_at_full_width(tmp_path):
    pytest.importorskip("onnxruntime")
    from mobilenet.deploy import export_onnx, model_info

    torch.manual_seed(0)
    model = create_model("mobilenet_v4_hybrid_medium", num_classes=5, resolution=96).eval()
    for m in model.modules():  # statistics and scales that look trained, so every path counts
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
        elif hasattr(m, "gamma"):
            nn.init.uniform_(m.gamma, 0.5, 1.5)
    with torch.no_grad():
        scale = model(torch.randn(2, 3, 96, 96)).abs().max().item()
    # float32 round-off relative to the logits' size (about 100 here after 40 blocks of unit-scale residuals)
    result = export_onnx(model, str(tmp_path / "v4.onnx"), model_info(model), num_images=2,
                         tolerance=1e-5 * max(1.0, scale))
    assert scale > 1 and result.max_abs_diff <= 1e-5 * scale


def test_reproduce_cost_table_matches_every_published_cell():
    from mobilenet.reproduce.tables import v4_costs

    cells = [cell for _, _, cell in v4_costs().cells() if cell.printed is not None]
    assert len(cells) == 9 and all(cell.match for cell in cells)
