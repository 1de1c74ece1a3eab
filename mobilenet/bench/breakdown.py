"""Where a torch backend's time goes: depthwise, pointwise and other layers, from ``torch.profiler`` on the real
execution path (eager ops for ``torch``, the compiled graph's oneDNN convolutions for ``torch-fast``), next to
their share of the Mult-Adds; and the pointwise layers' rate next to torch.mm on the very same M×N×K."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from ..native_stderr import dropping
from ..timing import time_call

if TYPE_CHECKING:
    from .report import Row

_CONV_OPS = ("aten::conv2d", "mkldnn::_convolution_pointwise", "mkldnn::_convolution_pointwise_",
             "mkldnn::_convolution_pointwise.binary", "aten::mkldnn_convolution", "aten::convolution",
             "onednn::qconv_pointwise", "onednn::qconv2d_pointwise")  # the last two: torch-int8's compiled graph


def fill_breakdown(row: Row, runner, x: torch.Tensor, cost, quick: bool) -> None:
    """Fills the per-kind time and Mult-Adds shares and the pointwise-versus-torch.mm rates of ``row``.

    Each round profiles one forward pass and then runs torch.mm on every pointwise layer's (M, K, N) of that pass,
    so the two rates are taken side by side.
    """
    from torch.profiler import ProfilerActivity, profile

    passes = 2 if quick else 5
    spent = {"depthwise": 0.0, "pointwise": 0.0, "conv": 0.0}  # seconds over all passes
    calls: dict[tuple[int, int, int], int] = {}  # pointwise (M, K, N) -> calls over all passes
    wall = mm_time = 0.0
    operands: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    for _ in range(passes):
        with dropping("USDT:", "STAGE:"), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            start = time.perf_counter()
            runner(x)
            wall += time.perf_counter() - start
        shapes = []
        for event in prof.events():
            kind, shape = conv_kind(event)
            if kind is None:
                continue
            spent[kind] += event.cpu_time_total / 1e6
            if kind == "pointwise":
                calls[shape] = calls.get(shape, 0) + 1
                shapes.append(shape)
        with torch.inference_mode():
            for m, k, n in shapes:
                if (m, k, n) not in operands:
                    operands[(m, k, n)] = (torch.randn(m, k), torch.randn(k, n))
                    torch.mm(*operands[(m, k, n)])  # first touch of fresh memory is not GEMM time
                mm_time += time_call(lambda pair=operands[(m, k, n)]: torch.mm(*pair), 0, 1)[0]
    row.dw_time_pct = 100 * spent["depthwise"] / wall
    row.pw_time_pct = 100 * spent["pointwise"] / wall
    row.other_time_pct = max(0.0, 100 - row.dw_time_pct - row.pw_time_pct)
    kinds = cost.by_kind()
    row.dw_madds_pct = kinds.get("depthwise", {}).get("mult_adds_pct", 0.0)
    row.pw_madds_pct = kinds.get("pointwise", {}).get("mult_adds_pct", 0.0)
    row.other_madds_pct = max(0.0, 100 - row.dw_madds_pct - row.pw_madds_pct)
    macs = sum(m * k * n * c for (m, k, n), c in calls.items())
    row.pw_mult_adds = macs // passes
    if spent["pointwise"] > 0 and mm_time > 0:
        row.pw_gmac_per_s = macs / spent["pointwise"] / 1e9
        row.mm_gmac_per_s = macs / mm_time / 1e9
        row.pw_pct_of_mm = 100 * row.pw_gmac_per_s / row.mm_gmac_per_s


def conv_kind(event) -> tuple[str | None, tuple[int, int, int] | None]:
    """``("depthwise" | "pointwise" | "conv", (M, K, N))`` for an outermost convolution op, else ``(None, None)``.

    The weight is the last 4-D input of every float conv op variant ((O, I/g, kh, kw)) and the activation the 4-D
    input just before it: ``aten::conv2d`` takes (input, weight, bias), the compiled graph's fused conv + add
    ``mkldnn::_convolution_pointwise_`` takes (accumulator, input, weight, bias). oneDNN's int8 ops take the
    activation first and the weight second.
    """
    if event.name not in _CONV_OPS:
        return None, None
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in _CONV_OPS:
            return None, None
        parent = parent.cpu_parent
    shapes = [s for s in (event.input_shapes or []) if len(s) == 4]
    if len(shapes) < 2:
        return None, None
    # oneDNN's int8 convolutions take (input, scales and zero points, weight, ..., [accumulator of a fused add]).
    inp, weight = shapes[:2] if event.name.startswith("onednn::") else shapes[-2:]
    out_chs, in_per_group, kh, kw = weight
    if kh == kw == 1 and in_per_group == inp[1]:
        # A 1×1 conv at stride 1 is a GEMM: M = B·H·W output positions, K input channels, N output channels.
        return "pointwise", (inp[0] * inp[2] * inp[3], in_per_group, out_chs)
    if in_per_group == 1 and inp[1] > 1:
        return "depthwise", None
    return "conv", None
