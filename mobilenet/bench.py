"""``mobilenet bench``: latency and throughput of every backend, against this machine's own GEMM ceiling.

Every number is relative to a baseline measured in the same run, on the same threads, so results from a busy or
a different machine stay comparable: the speed-up over torch eager NCHW, the share of the GEMM peak (torch.mm on
2048×2048 float32), and the rate of the pointwise layers next to torch.mm on the very same M×N×K.

Per model × backend × batch a row holds latency (median over repeats after warm-up), images/s, achieved GMAC/s
(Mult-Adds from :func:`mobilenet.count_cost` per second) and its share of the peak. For the torch backends the
row also holds a per-layer-kind breakdown taken with ``torch.profiler`` on the real execution path (eager ops for
``torch``, the compiled graph's oneDNN convolutions for ``torch-fast``): the share of time spent in depthwise,
pointwise and other work next to their share of the Mult-Adds.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from .cost import count_cost
from .deploy.backends import BACKENDS, make_runner
from .deploy.images import sample_images
from .errors import MobileNetError
from .models import create_model

DEFAULT_MODELS = ("mobilenet_v1", "mobilenet_v2")
_CONV_OPS = ("aten::conv2d", "mkldnn::_convolution_pointwise", "mkldnn::_convolution_pointwise_",
             "mkldnn::_convolution_pointwise.binary", "aten::mkldnn_convolution", "aten::convolution")


@dataclass
class Row:
    """One measurement. ``gemm_peak_gflops`` is the torch.mm rate timed in the same rounds as this row (its
    ``pct_of_peak`` refers to it). Breakdown fields are ``None`` for the ONNX Runtime backends."""

    model: str
    alpha: float
    resolution: int
    backend: str
    batch: int
    latency_ms: float
    images_per_s: float
    gmac_per_s: float
    pct_of_peak: float
    speedup_vs_torch: float
    mult_adds: int
    repeats: int
    gemm_peak_gflops: float = 0.0
    dw_time_pct: float | None = None
    pw_time_pct: float | None = None
    other_time_pct: float | None = None
    dw_madds_pct: float | None = None
    pw_madds_pct: float | None = None
    other_madds_pct: float | None = None
    pw_mult_adds: int | None = None
    pw_gmac_per_s: float | None = None
    mm_gmac_per_s: float | None = None
    pw_pct_of_mm: float | None = None
    note: str = ""


@dataclass
class Report:
    """A benchmark run: the machine, the GEMM peak measured in it, and its rows."""

    machine: str
    threads: int
    versions: dict
    gemm_peak_gflops: float
    rows: list[Row] = field(default_factory=list)

    def csv_name(self) -> str:
        """``bench_<cpu>_<threads>t_torch<v>_ort<v>.csv``, so runs on other machines or versions never collide."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.machine.lower()).strip("-")
        return (f"bench_{slug}_{self.threads}t_torch{self.versions['torch'].split('+')[0]}"
                f"_ort{self.versions.get('onnxruntime', 'none')}.csv")

    def write_csv(self, path: str) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["machine", "threads", *Row.__dataclass_fields__])
            writer.writeheader()
            for row in self.rows:
                writer.writerow({"machine": self.machine, "threads": self.threads, **_rounded(asdict(row))})
        return path

    def json_lines(self) -> str:
        return "\n".join(json.dumps(_rounded(asdict(r))) for r in self.rows)

    def table(self) -> str:
        lines = [f"{self.machine}, {self.threads} threads, torch {self.versions['torch']}, onnxruntime "
                 f"{self.versions.get('onnxruntime', '-')}; GEMM peak (torch.mm fp32, median over the run): "
                 f"{self.gemm_peak_gflops:.1f} GFLOP/s = {self.gemm_peak_gflops / 2:.1f} GMAC/s; every row's "
                 "% peak and x eager are timed in the same rounds as its own GEMM and eager calls"]
        head = (f"{'model':<22} {'backend':<17} {'batch':>5} {'latency ms':>11} {'images/s':>9} {'GMAC/s':>7} "
                f"{'% peak':>6} {'x eager':>7} {'peak GFLOP/s':>12}")
        lines += ["", head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{_label(r):<22} {r.backend:<17} {r.batch:>5} {r.latency_ms:>11.2f} "
                         f"{r.images_per_s:>9.1f} {r.gmac_per_s:>7.1f} {r.pct_of_peak:>6.1f} "
                         f"{r.speedup_vs_torch:>7.2f} {r.gemm_peak_gflops:>12.1f}")
        broken = [r for r in self.rows if r.dw_time_pct is not None]
        if broken:
            head = (f"{'model':<22} {'backend':<11} {'batch':>5} | time % dw/pw/other | MAdds % dw/pw/other | "
                    f"pointwise GMAC/s  mm GMAC/s  pw/mm %")
            lines += ["", "per layer kind (torch.profiler on the backend's own ops; mm: torch.mm on each pointwise "
                          "layer's M x N x K, timed right after each profiled pass)", head, "-" * len(head)]
            for r in broken:
                lines.append(
                    f"{_label(r):<22} {r.backend:<11} {r.batch:>5} | {r.dw_time_pct:5.1f} {r.pw_time_pct:5.1f} "
                    f"{r.other_time_pct:5.1f}  | {r.dw_madds_pct:5.1f} {r.pw_madds_pct:5.1f} {r.other_madds_pct:5.1f}"
                    f"   | {r.pw_gmac_per_s:16.1f} {r.mm_gmac_per_s:10.1f} {r.pw_pct_of_mm:8.1f}")
        notes = sorted({f"{r.backend}: {r.note}" for r in self.rows if r.note})
        return "\n".join(lines + [""] + notes)


def _label(r: Row) -> str:
    return f"{r.model} a{r.alpha:g} r{r.resolution}"


def _rounded(d: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def machine_name() -> str:
    """The CPU model (from /proc/cpuinfo where available) and the core count."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} {os.cpu_count()}cpu"


def time_call(fn, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def gemm_peak(n: int = 2048, repeats: int = 10) -> float:
    """This machine's float32 GEMM rate in GFLOP/s: the median of torch.mm on n×n matrices (current threads)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    with torch.inference_mode():
        t = statistics.median(time_call(lambda: torch.mm(a, b), 2, repeats))
    return 2 * n**3 / t / 1e9


def run_bench(models=DEFAULT_MODELS, batches=(1, 32), backends=BACKENDS, *, alpha: float | None = None,
              resolution: int | None = None, quick: bool = False, repeats: int | None = None,
              breakdown: bool = True, threads: int | None = None, progress=None) -> Report:
    """Measures every model × backend × batch and returns a :class:`Report`.

    Args:
        models: registered model names.
        batches: batch sizes.
        backends: names from ``BACKENDS``; ``torch`` is always measured too, as the baseline of the speed-up.
        alpha, resolution: width multiplier and input side (default 1.0 and 224; quick mode 0.25 and 64).
        quick: a fast smoke run: small models, few repeats, a 512² GEMM, torch-fast without compilation.
        repeats: timed calls per measurement (default: about 2 s worth, between 5 and 30; quick: 3).
        breakdown: profile the torch backends per layer kind and time torch.mm on the pointwise shapes.
        threads: intra-op threads for every backend and for the GEMM peak (default: torch's current setting).
            One thread gives steadier numbers on a machine shared with other jobs, where a preempted thread
            stalls every parallel region of the others.
        progress: a callable ``(description) -> None`` called before each measurement.
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise MobileNetError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        return _run(models, batches, backends, alpha, resolution, quick, repeats, breakdown, progress)
    finally:
        torch.set_num_threads(previous)


def _run(models, batches, backends, alpha, resolution, quick, repeats, breakdown, progress) -> Report:
    alpha = alpha if alpha is not None else (0.25 if quick else 1.0)
    resolution = resolution if resolution is not None else (64 if quick else 224)
    backends = ["torch"] + [b for b in backends if b != "torch"]
    versions = {"torch": torch.__version__}
    try:
        import onnxruntime
        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    gemm_n = 512 if quick else 2048
    report = Report(machine_name(), torch.get_num_threads(), versions, 0.0)
    peaks: list[float] = []
    for name in models:
        try:
            model = create_model(name, alpha=alpha, resolution=resolution).eval()
        except ValueError as e:
            raise MobileNetError(str(e)) from None
        cost = count_cost(model)
        calib, _ = sample_images(16 if quick else 64, resolution, seed=1)
        runners = {}
        for backend in backends:
            if progress:
                progress(f"{name} {backend}: preparing")
            runners[backend] = make_runner(model, backend, calib=calib, compile=not quick)
        for batch in batches:
            if progress:
                progress(f"{name} batch {batch}")
            x = torch.randn(batch, model.in_chans, resolution, resolution)
            rows, peak = _measure_interleaved(runners, x, cost, quick, repeats, gemm_n)
            peaks.append(peak)
            for backend, row in rows.items():
                if breakdown and backend.startswith("torch"):
                    if progress:
                        progress(f"{name} {backend} batch {batch}: profile")
                    _breakdown(row, runners[backend], x, cost, quick)
                report.rows.append(row)
    report.gemm_peak_gflops = statistics.median(peaks) if peaks else gemm_peak(gemm_n, 3)
    return report


def _measure_interleaved(runners: dict, x: torch.Tensor, cost, quick: bool, repeats: int | None,
                         gemm_n: int) -> tuple[dict[str, Row], float]:
    """Times every runner on ``x`` in rounds, one call each per round, with one GEMM-peak call per round.

    Interleaving puts the baseline, every backend and the GEMM reference in the same time windows, so the ratios
    hold even when other jobs load the machine unevenly over the run; each figure is the median over rounds.
    """
    a, b = torch.randn(gemm_n, gemm_n), torch.randn(gemm_n, gemm_n)
    calls = {name: (lambda r=r: r(x)) for name, r in runners.items()}
    calls["gemm"] = lambda: torch.mm(a, b)
    first = {name: time_call(fn, 0, 1)[0] for name, fn in calls.items()}  # compiles (torch-fast), allocates
    if repeats is None:
        repeats = 3 if quick else int(min(30, max(5, 8.0 / max(sum(first.values()), 1e-4))))
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for _ in range(1 if quick else 2):
            for fn in calls.values():
                fn()
        for _ in range(repeats):
            for name, fn in calls.items():
                times[name] += time_call(fn, 0, 1)
    peak = 2 * gemm_n**3 / statistics.median(times.pop("gemm")) / 1e9
    batch = x.shape[0]
    base = statistics.median(times["torch"])
    rows = {}
    for name, runner in runners.items():
        latency = statistics.median(times[name])
        gmacs = cost.mult_adds * batch / latency / 1e9
        rows[name] = Row(runner.info.name, runner.info.alpha, runner.info.resolution, name, batch, 1e3 * latency,
                         batch / latency, gmacs, 100 * 2 * gmacs / peak, base / latency, cost.mult_adds, repeats,
                         gemm_peak_gflops=peak, note=runner.note)
    return rows, peak


def _breakdown(row: Row, runner, x: torch.Tensor, cost, quick: bool) -> None:
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
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            start = time.perf_counter()
            runner(x)
            wall += time.perf_counter() - start
        shapes = []
        for event in prof.events():
            kind, shape = _conv_kind(event)
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


def _conv_kind(event) -> tuple[str | None, tuple[int, int, int] | None]:
    """``("depthwise" | "pointwise" | "conv", (M, K, N))`` for an outermost convolution op, else ``(None, None)``.

    The weight is the last 4-D input of every conv op variant ((O, I/g, kh, kw)) and the activation the 4-D input
    just before it: ``aten::conv2d`` takes (input, weight, bias), the compiled graph's fused conv + add
    ``mkldnn::_convolution_pointwise_`` takes (accumulator, input, weight, bias).
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
    inp, weight = shapes[-2], shapes[-1]
    out_chs, in_per_group, kh, kw = weight
    if kh == kw == 1 and in_per_group == inp[1]:
        # A 1×1 conv at stride 1 is a GEMM: M = B·H·W output positions, K input channels, N output channels.
        return "pointwise", (inp[0] * inp[2] * inp[3], in_per_group, out_chs)
    if in_per_group == 1 and inp[1] > 1:
        return "depthwise", None
    return "conv", None
