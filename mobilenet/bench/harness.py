"""``mobilenet bench``: latency and throughput of every backend, each timed as if it ran alone, against this
machine's own GEMM ceilings.

Per model × batch the backends and three GEMM references (fp32, bf16, int8) are timed in blocks of calls,
alternated across rounds (:func:`mobilenet.timing.alternate`): one call of each per round would let the previous
runtime's spinning threads slow the next one down, while blocks alternated across rounds still put every backend
and every reference in the same time windows, so the ratios hold when other jobs load the machine unevenly.

Every number is relative to a baseline measured in the same run: the speed-up over torch eager NCHW, the ratio to
OpenVINO's best backend, and the share of the GEMM peak of the precision the backend actually ran.
"""

from __future__ import annotations

import statistics

import torch

from ..cost import count_cost
from ..deploy.backends import CONCRETE, available_backends, make_runner
from ..deploy.images import sample_images
from ..errors import MobileNetError
from ..models import create_model
from ..timing import SETTLE, SETTLE_TIME, alternate, library_versions, machine_name, time_call
from .breakdown import fill_breakdown
from .peaks import KINDS, gemm_call, gemm_rate, gemm_sizes, peak_kind
from .report import Report, Row

DEFAULT_MODELS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large")
BLOCK_SECONDS = 0.25  # timed seconds per block: long enough for a runtime to settle, short enough to alternate


def run_bench(models=DEFAULT_MODELS, batches=(1, 32), backends=None, *, alpha: float | None = None,
              resolution: int | None = None, quick: bool = False, repeats: int | None = None,
              breakdown: bool = True, threads: int | None = None, progress=None, on_rows=None) -> Report:
    """Measures every model × backend × batch and returns a :class:`Report`.

    Args:
        models: registered model names.
        batches: batch sizes.
        backends: names from ``CONCRETE`` or ``auto`` (default: every installed one); ``torch`` is always measured
            too, as the baseline of the speed-up.
        alpha, resolution: width multiplier and input side (default 1.0 and 224; quick mode 0.25 and 64).
        quick: a fast smoke run: small models, few repeats, a 512² GEMM, torch backends without compilation.
        repeats: rounds of alternated blocks per measurement (default 5; quick 2); the median call is reported.
        breakdown: profile the torch backends per layer kind and time torch.mm on the pointwise shapes.
        threads: intra-op threads for every backend and for the GEMM peaks (default: torch's current setting).
        progress: a callable ``(description) -> None`` called before each measurement.
        on_rows: a callable ``(report) -> None`` called with the report so far after each model x batch, so a
            caller can save what was measured before a long run is stopped.
    """
    backends = list(backends or available_backends())
    unknown = [b for b in backends if b not in (*CONCRETE, "auto")]
    if unknown:
        raise MobileNetError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(CONCRETE)}, auto")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        return _run(models, batches, backends, alpha, resolution, quick, repeats, breakdown, progress, on_rows)
    finally:
        torch.set_num_threads(previous)


def _run(models, batches, backends, alpha, resolution, quick, repeats, breakdown, progress, on_rows) -> Report:
    alpha = alpha if alpha is not None else (0.25 if quick else 1.0)
    resolution = resolution if resolution is not None else (64 if quick else 224)
    backends = ["torch"] + [b for b in backends if b != "torch"]
    gemm_n = gemm_sizes(512 if quick else 2048)
    report = Report(machine_name(), torch.get_num_threads(), library_versions(), 0.0)
    peaks: dict[str, list[float]] = {k: [] for k in KINDS}
    for name in models:
        try:
            model = create_model(name, alpha=alpha, resolution=resolution).eval()
        except ValueError as e:
            raise MobileNetError(str(e)) from None
        cost = count_cost(model)
        calib, _ = sample_images(16 if quick else 64, resolution, seed=1)
        measured_batch_norm(model, calib)
        runners = {}
        for backend in backends:
            if progress:
                progress(f"{name} {backend}: preparing")
            try:
                runners[backend] = make_runner(model, backend, calib=calib, compile=not quick,
                                               batch=max(batches) if backend == "auto" else 1)
            except MobileNetError as e:  # e.g. a graph one runtime cannot quantize: the others still count
                if backend == "torch":
                    raise
                report.skipped.append(f"{name} {backend}: {e}")
        for batch in batches:
            if progress:
                progress(f"{name} batch {batch}")
            x = torch.randn(batch, model.in_chans, resolution, resolution)
            rows, batch_peaks = measure_alone(runners, x, cost, quick, repeats, gemm_n)
            for kind, rate in batch_peaks.items():
                peaks[kind].append(rate)
            for backend, row in rows.items():
                if breakdown and backend.startswith("torch"):
                    if progress:
                        progress(f"{name} {backend} batch {batch}: profile")
                    fill_breakdown(row, runners[backend], x, cost, quick)
                report.rows.append(row)
            report.peaks = {k: statistics.median(v) for k, v in peaks.items() if v}
            report.gemm_peak_gflops = report.peaks.get("fp32", 0.0)
            if on_rows:
                on_rows(report)
    return report


def measured_batch_norm(model: torch.nn.Module, images: torch.Tensor, chunk: int = 16) -> None:
    """Replaces the BN running statistics of a fresh ``model`` with those of ``images``, as training would.

    A fresh network's BN (mean 0, variance 1) does not normalise: its activations shrink layer after layer (V3-Large's
    logits come out near 1e-11), and int8 runtimes calibrated on them get rescalings no trained network has.
    XNNPACK refuses those and runs V3-Large in 17 parts through TensorFlow Lite's own kernels (3.6 ms at batch 1
    against 0.8). Speed does not otherwise depend on the weights; with measured statistics every backend sees
    activations of a trained network's scale."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the chunks
        m.train()
    with torch.no_grad():
        for i in range(0, len(images), chunk):
            model(images[i:i + chunk])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def measure_alone(runners: dict, x: torch.Tensor, cost, quick: bool, repeats: int | None,
                  gemm_n: int | dict[str, int]) -> tuple[dict[str, Row], dict[str, float]]:
    """Times every runner on ``x`` and the three GEMM references (side ``gemm_n``, or per precision), each in
    blocks alternated across rounds.

    Returns the rows and the GEMM rates (GFLOP/s; GOP/s for int8) measured in the same rounds.
    """
    calls = {name: (lambda r=r: r(x)) for name, r in runners.items()}
    sides = gemm_n if isinstance(gemm_n, dict) else dict.fromkeys(KINDS, gemm_n)
    calls.update({f"gemm-{kind}": gemm_call(kind, sides[kind]) for kind in KINDS})
    with torch.inference_mode():
        for fn in calls.values():
            fn()  # compiles (torch backends), allocates, packs weights
        first = {name: time_call(fn, 0, 1)[0] for name, fn in calls.items()}
        blocks = {name: 2 if quick else int(min(20, max(3, BLOCK_SECONDS / max(t, 1e-5)))) for name, t in
                  first.items()}
        rounds = repeats or (2 if quick else 5)
        timings = alternate(calls, rounds=rounds, block=blocks, warmup=0, settle=SETTLE, settle_time=SETTLE_TIME)
    rates = {kind: gemm_rate(sides[kind], timings.pop(f"gemm-{kind}").median) for kind in KINDS}
    batch = x.shape[0]
    base = timings["torch"].median
    rows = {}
    for name, runner in runners.items():
        latency = timings[name].median
        kind = peak_kind(runner.precision)
        gmacs = cost.mult_adds * batch / latency / 1e9
        label = f"auto:{runner.backend}" if name == "auto" else name  # which backend auto chose
        rows[name] = Row(runner.info.name, runner.info.alpha, runner.info.resolution, label, batch, 1e3 * latency,
                         batch / latency, gmacs, 100 * 2 * gmacs / rates[kind], base / latency, cost.mult_adds,
                         rounds, precision=runner.precision, peak_kind=kind, peak_gflops=rates[kind],
                         spread_pct=100 * timings[name].spread, gemm_peak_gflops=rates["fp32"], note=runner.note)
    ov = [r.latency_ms for name, r in rows.items() if name.startswith("openvino")]
    for r in rows.values():
        r.vs_openvino = min(ov) / r.latency_ms if ov else None
    return rows, rates
