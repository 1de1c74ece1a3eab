import pytest
import torch

from mobilenet.layers import ConvBNAct, DepthwiseSeparable, InvertedResidual, make_divisible, round_channels


@pytest.mark.parametrize(
    "value, expected",
    [
        (32 * 0.35, 16),  # 11.2 rounds to 8, which is below 90 %, so up to 16 (V2-0.35's stem in the reference)
        (32 * 0.5, 16),
        (24 * 0.75, 24),  # 18 -> 16 would drop more than 10 %, so 24
        (1280 * 1.4, 1792),
        (96 * 1.4, 136),  # 134.4 -> 136
        (3.0, 8),  # never below the divisor
    ],
)
def test_make_divisible_known_values(value, expected):
    assert make_divisible(value) == expected


def test_make_divisible_invariants():
    for value in (x / 4 for x in range(1, 8000)):
        out = make_divisible(value)
        assert out % 8 == 0 and out >= 8, value
        assert out >= 0.9 * value, value
        assert abs(out - value) <= 8 or out == 8, value


def test_round_channels_policies():
    assert round_channels(32, 0.25, "tf-slim") == 8
    assert round_channels(16, 0.25, "tf-slim") == 8  # TF-Slim's min_depth
    assert round_channels(16, 0.25, "keras") == 4
    assert round_channels(1024, 0.75, "keras") == 768
    assert round_channels(100, 0.75, "tf-slim") == 75
    assert round_channels(100, 0.75, "divisible8") == 72
    with pytest.raises(ValueError, match="rounding policy 'nope'"):
        round_channels(32, 1.0, "nope")


def test_conv_bn_act_layout():
    m = ConvBNAct(4, 6, 3, 2)
    assert [n for n, _ in m.named_children()] == ["conv", "bn", "act"]
    assert m.conv.bias is None  # BN's shift makes a conv bias redundant
    linear = ConvBNAct(4, 6, 1, norm_layer=None, act_layer=None)
    assert [n for n, _ in linear.named_children()] == ["conv"] and linear.conv.bias is not None


@pytest.mark.parametrize("side", [1, 2, 7, 8, 15, 193])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_same_style_downsampling(side, kernel):
    out = ConvBNAct(3, 4, kernel, 2).eval()(torch.zeros(1, 3, side, side))
    assert out.shape[-1] == -(-side // 2)


def test_depthwise_separable_structure():
    m = DepthwiseSeparable(8, 16, stride=2)
    assert m.dw.conv.groups == 8 and m.dw.conv.kernel_size == (3, 3)
    assert m.pw.conv.kernel_size == (1, 1) and m.pw.conv.out_channels == 16
    assert isinstance(m.dw.act, torch.nn.ReLU) and isinstance(m.pw.act, torch.nn.ReLU)
    assert m(torch.randn(2, 8, 9, 9)).shape == (2, 16, 5, 5)


def test_inverted_residual_linear_bottleneck_and_residual():
    block = InvertedResidual(16, 96, 16, stride=1).eval()
    assert block.use_residual and not hasattr(block.project, "act")  # linear projection
    x = torch.randn(1, 16, 8, 8)
    body = block.project(block.dw(block.expand(x)))
    torch.testing.assert_close(block(x), x + body)
    assert not InvertedResidual(16, 96, 24, stride=1).use_residual
    assert not InvertedResidual(16, 96, 16, stride=2).use_residual
    no_expand = InvertedResidual(16, 16, 8)
    assert isinstance(no_expand.expand, torch.nn.Identity)  # V2's t = 1 block
