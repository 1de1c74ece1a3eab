"""This machine's GEMM ceilings: one square matrix multiply per precision, timed next to the backends.

A backend's share of the peak is only meaningful against the arithmetic it runs: fp32 work against the faster of
torch.mm in float32 and ONNX Runtime's MatMul (MLAS), bf16 work against torch.mm in bfloat16 (oneDNN uses
AVX512-BF16 or AMX where the CPU has them), int8 work against the faster of ``torch._int_mm`` (int8 × int8 →
int32, VNNI or AMX) and the quantized engine's u8 × s8 linear layer. Each reference is the faster of its
candidates because no one library is fastest on every CPU: on a Zen 5 EPYC torch.mm ran fp32 at 195 GFLOP/s on two
threads and ONNX Runtime's MatMul at 424, so against torch.mm alone ONNX Runtime's fp32 convolutions showed 184 %
of the "peak".
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import torch

from ..errors import MobileNetError
from ..timing import measure

KINDS = ("fp32", "bf16", "int8")


def gemm_call(kind: str, n: int) -> Callable[[], object]:
    """A zero-argument n×n×n matrix multiply at precision ``kind``: the fastest of its :data:`GEMMS` on this CPU
    (:func:`fastest_gemm`)."""
    return GEMMS[kind][fastest_gemm(kind)](n)


def _torch_mm(dtype: torch.dtype) -> Callable[[int], Callable[[], torch.Tensor]]:
    def make(n: int) -> Callable[[], torch.Tensor]:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        return lambda: torch.mm(a, b)
    return make


def _ort_matmul(n: int) -> Callable[[], object]:
    # A one-node float32 graph in the session every ONNX Runtime backend gets.
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from ..deploy.onnx_io import ort_session

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "b")])
    session = ort_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    a = {"a": rng.standard_normal((n, n), dtype=np.float32)}
    return lambda: session.run(None, a)


def _int_mm(n: int) -> Callable[[], torch.Tensor]:
    a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    b = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    return lambda: torch._int_mm(a, b)


def _quantized_linear(n: int) -> Callable[[], torch.Tensor]:
    # u8 activations x s8 weights, int32 accumulation, requantized to u8: the quantized engine's GEMM (FBGEMM or
    # oneDNN), the same arithmetic as the int8 convolutions of the backends. Its quantized tensors are deprecated
    # in favour of PT2E (which has no standalone GEMM to time); where they are gone, _int_mm is the reference.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*deprecated", category=UserWarning)
        x = torch.quantize_per_tensor(torch.rand(n, n), 1 / 255, 0, torch.quint8)
        w = torch.quantize_per_tensor(torch.randn(n, n).clamp(-1, 1), 1 / 127, 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(w, None)
    return lambda: torch.ops.quantized.linear(x, packed, 1.0, 0)


# Per precision, the GEMMs that may be this CPU's fastest, the first being the fallback.
GEMMS = {"fp32": {"torch.mm": _torch_mm(torch.float32), "onnxruntime MatMul": _ort_matmul},
         "bf16": {"torch.mm": _torch_mm(torch.bfloat16)},
         "int8": {"torch._int_mm": _int_mm, "quantized.linear": _quantized_linear}}


@functools.cache
def fastest_gemm(kind: str) -> str:
    """The name of the fastest of ``GEMMS[kind]`` here, timed at n = 256. For int8, ``torch._int_mm`` uses VNNI or
    AMX where the CPU has them and a reference loop otherwise (1-2 GOP/s on an AVX2-only AMD EPYC, slower than
    fp32), while the quantized engine's kernels use AVX2's ``vpmaddubsw``: against ``_int_mm`` alone, int8 backends
    on such a CPU would show thousands of per cent of the "peak"."""
    if len(GEMMS[kind]) == 1:
        return next(iter(GEMMS[kind]))
    rates = {}
    for name, make in GEMMS[kind].items():
        try:
            rates[name] = _timed_rate(make(256), 256)
        except (RuntimeError, AttributeError, ImportError, MobileNetError):  # an engine or runtime missing here
            continue
    return max(rates, key=rates.__getitem__, default=next(iter(GEMMS[kind])))


def gemm_sizes(n_max: int, call_seconds: float = 0.1) -> dict[str, int]:
    """Per precision, the largest side up to ``n_max`` (halving from it) whose GEMM takes about ``call_seconds``.

    A CPU without VNNI or AVX512-BF16 runs ``torch._int_mm`` and bf16 ``torch.mm`` on reference kernels, some
    hundred times slower than fp32 (measured 1-2 GOP/s on an AVX2-only AMD EPYC): a 2048³ reference call would
    take about 15 s and the benchmark hours. The rate is timed at n = 256 and the cube law picks the side.
    """
    sizes = {}
    for kind in KINDS:
        rate, n = _timed_rate(gemm_call(kind, 256), 256), n_max
        while n > 256 and 2 * n**3 / (rate * 1e9) > call_seconds:
            n //= 2
        sizes[kind] = n
    return sizes


def gemm_rate(n: int, seconds: float) -> float:
    """GFLOP/s (GOP/s for int8) of an n×n×n GEMM that took ``seconds``."""
    return 2 * n**3 / seconds / 1e9


def gemm_peak(n: int = 2048, repeats: int = 10, kind: str = "fp32") -> float:
    """This machine's GEMM rate at ``kind`` in GFLOP/s: the median of ``repeats`` n×n×n multiplies (current
    threads)."""
    return _timed_rate(gemm_call(kind, n), n, repeats)


def _timed_rate(call: Callable[[], object], n: int, repeats: int = 3) -> float:
    """The rate of an n×n×n GEMM call: the median of ``repeats`` timed calls after :func:`measure`'s warm-up."""
    with torch.inference_mode():
        return gemm_rate(n, measure(call, min_time=0.0, max_runs=repeats).median)


def peak_kind(precision: str) -> str:
    """The GEMM a backend's precision is compared with: ``int8+fp32`` (int8 layers, float rest) counts as int8."""
    return "int8" if precision.startswith("int8") else ("bf16" if precision.startswith("bf16") else "fp32")
