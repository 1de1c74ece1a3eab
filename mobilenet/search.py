"""Budget search: the most accurate (model, α, resolution) that fits N Mult-Adds, P parameters or L milliseconds.

The search enumerates a grid of configurations, counts each one's exact cost with :func:`mobilenet.cost.count_cost`
(each (model, α) is built once, on PyTorch's ``meta`` device so no weights are allocated, and counted at every
resolution), keeps those within the budget and returns the Pareto front of cost against an accuracy proxy.

Accuracy proxy, per configuration, with its ``top1_source``:

* ``"measured"``: top-1 from a results file the user gives (CSV or JSON rows with ``model``, ``alpha``,
  ``resolution``, ``top1`` in percent); configurations in the file join the grid.
* ``"paper"``: the ImageNet top-1 the paper prints for exactly this configuration (the table each model registers
  with, :func:`mobilenet.models.published_table`).
* ``"interpolated"`` / ``"extrapolated"``: a least-squares line of top-1 against the natural log of Mult-Adds, fitted
  per model to that model's published configurations (x = their exact Mult-Adds as counted here, y = printed top-1);
  "interpolated" when the configuration's Mult-Adds lie within the published ones' range, "extrapolated" outside it:
  below the range the line continues, above it the proxy is capped at the model's best published top-1, so no gain
  is assumed beyond what the paper measured (the steep V3-Small line would otherwise rate Small 1.4/256 above
  Large). A model with a single published point uses the mean slope of the models that have two or more, through
  that point; a model with none has no proxy and is left out of the front. The fit ignores how the cost was reached
  (α or ρ): the papers show both trade accuracy for Mult-Adds at similar rates; it is a proxy, not a prediction.

Cost axes of the front: Mult-Adds, plus parameters when a parameter budget is given. A configuration is dominated when
another one costs no more on every axis and has a higher proxy, or an equal proxy at a strictly lower cost.

Latency (``latency_ms`` with a ``backend``) is measured at batch 1 lazily: only configurations on the current front
are timed; those over the limit are dropped and the front is recomputed, until every front member is timed and fits.
So the front is exactly the front of the configurations that meet the latency limit, with a few timings at most.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .cost import count_cost
from .errors import MobileNetError
from .models import create_model, get_builder, list_models, published_table

FAMILIES = {
    "v1": ("mobilenet_v1",),
    "v2": ("mobilenet_v2",),
    "v3": ("mobilenet_v3_large", "mobilenet_v3_small"),
}
DEFAULT_ALPHAS = (0.25, 0.35, 0.5, 0.75, 1.0, 1.25, 1.4)
DEFAULT_RESOLUTIONS = (96, 128, 160, 192, 224, 256)


@dataclass
class Candidate:
    """One configuration: its exact cost, its accuracy proxy and, when measured, its batch-1 latency."""

    model: str
    alpha: float
    resolution: int
    mult_adds: int
    params: int
    top1: float | None = None
    top1_source: str | None = None  # "measured", "paper", "interpolated", "extrapolated" or None
    latency_ms: float | None = None

    @property
    def key(self) -> tuple[str, float, int]:
        return (self.model, self.alpha, self.resolution)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Budget:
    """Upper limits; ``None`` means unlimited."""

    mult_adds: int | None = None
    params: int | None = None
    latency_ms: float | None = None

    def fits_cost(self, c: Candidate) -> bool:
        return ((self.mult_adds is None or c.mult_adds <= self.mult_adds)
                and (self.params is None or c.params <= self.params))

    def axes(self) -> tuple[str, ...]:
        return ("mult_adds", "params") if self.params is not None else ("mult_adds",)


@dataclass
class SearchResult:
    searched: int  # configurations whose cost was counted
    fitting: list[Candidate]  # within the Mult-Adds / params budget (latency is only known for the timed ones)
    front: list[Candidate]  # the Pareto front, cheapest first
    axes: tuple[str, ...]
    no_proxy: list[str] = field(default_factory=list)  # models without any accuracy proxy
    timed: list[Candidate] = field(default_factory=list)  # every configuration whose latency was measured


def resolve_models(names: str | Sequence[str]) -> list[str]:
    """Expands family names (``v1``, ``v2``, ``v3``) and checks registered names; order kept, duplicates dropped."""
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in filter(None, items):
        if item.lower() in FAMILIES:
            out.extend(FAMILIES[item.lower()])
            continue
        try:
            get_builder(item)
        except ValueError as e:
            raise MobileNetError(f"{e} (or a family: {', '.join(FAMILIES)})") from None
        out.append(item)
    if not out:
        raise MobileNetError(f"no models given; use families ({', '.join(FAMILIES)}) or names from `mobilenet list`")
    return list(dict.fromkeys(out))


class CostCache:
    """Exact costs and paper numbers of configurations, building each (model, α) once on the meta device."""

    def __init__(self):
        self._built: dict[tuple[str, float], torch.nn.Module] = {}
        self._costs: dict[tuple[str, float, int], tuple[int, int]] = {}
        self._papers: dict[str, dict[tuple[float, int], float]] = {}

    def model(self, name: str, alpha: float) -> torch.nn.Module:
        key = (name, float(alpha))
        if key not in self._built:
            with torch.device("meta"):  # no weights are allocated: the counter only reads shapes
                self._built[key] = create_model(name, alpha=float(alpha))
        return self._built[key]

    def cost(self, name: str, alpha: float, resolution: int) -> tuple[int, int]:
        """(Mult-Adds, params) of one configuration."""
        key = (name, float(alpha), int(resolution))
        if key not in self._costs:
            c = count_cost(self.model(name, alpha), int(resolution))
            self._costs[key] = (c.mult_adds, c.params)
        return self._costs[key]

    def paper(self, name: str) -> dict[tuple[float, int], float]:
        """The top-1 the paper prints per (α, resolution) for this model (the registry's published table)."""
        if name not in self._papers:
            self._papers[name] = {(float(a), int(r)): float(row[0]) for (a, r), row in published_table(name).items()}
        return self._papers[name]


@dataclass(frozen=True)
class LogLinearFit:
    """top-1 ≈ intercept + slope · ln(Mult-Adds), fitted on published points between ``lo`` and ``hi`` Mult-Adds.

    Above ``hi`` the proxy never exceeds ``best``, the model's best published top-1.
    """

    intercept: float
    slope: float
    lo: int
    hi: int
    best: float

    def __call__(self, mult_adds: int) -> tuple[float, str]:
        line = self.intercept + self.slope * math.log(mult_adds)
        if mult_adds > self.hi:
            return min(line, self.best), "extrapolated"
        return line, "interpolated" if mult_adds >= self.lo else "extrapolated"


def fit_proxies(table: CostCache, models: Iterable[str]) -> dict[str, LogLinearFit]:
    """Per-model log-linear fits of the paper's top-1 against exact Mult-Adds (see the module docstring)."""
    points = {name: [(table.cost(name, a, r)[0], top1) for (a, r), top1 in table.paper(name).items()]
              for name in models}
    fits: dict[str, LogLinearFit] = {}
    for name, pts in points.items():
        xs = [math.log(m) for m, _ in pts]
        if len(set(xs)) >= 2:
            mx, my = statistics.fmean(xs), statistics.fmean(t for _, t in pts)
            slope = sum((x - mx) * (t - my) for x, (_, t) in zip(xs, pts)) / sum((x - mx) ** 2 for x in xs)
            fits[name] = LogLinearFit(my - slope * mx, slope, min(m for m, _ in pts), max(m for m, _ in pts),
                                      max(t for _, t in pts))
    slopes = [f.slope for f in fits.values()]
    for name, pts in points.items():
        if name not in fits and pts and slopes:
            (m, top1), slope = pts[0], statistics.fmean(slopes)
            fits[name] = LogLinearFit(top1 - slope * math.log(m), slope, m, m, top1)
    return fits


def load_results(path: str | Path) -> dict[tuple[str, float, int], float]:
    """Measured top-1 per (model, α, resolution) from a CSV (header row) or JSON (a list of objects, or one object)
    with the fields ``model``, ``alpha``, ``resolution`` and ``top1`` (percent, 0-100; ``accuracy`` also accepted)."""
    path = Path(path)
    if not path.is_file():
        raise MobileNetError(f"results file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{"):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise MobileNetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        rows = [rows] if isinstance(rows, dict) else rows
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise MobileNetError(f"{path}: expected a JSON list of objects with model, alpha, resolution, top1")
        numbered = [(f"item {i}", r) for i, r in enumerate(rows)]
    else:
        numbered = [(f"line {i + 2}", r) for i, r in enumerate(csv.DictReader(text.splitlines()))]
    out = {}
    for where, row in numbered:
        row = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
        try:
            name = str(row["model"]).strip()
            alpha, res = float(row["alpha"]), int(float(row["resolution"]))
            top1 = row["top1"] if "top1" in row else row.get("accuracy")
            if top1 is None:
                raise KeyError("top1")
            top1 = float(top1)
        except KeyError as e:
            raise MobileNetError(f"{path} {where}: missing field {e.args[0]!r} (need model, alpha, resolution, "
                                 "top1)") from None
        except (TypeError, ValueError):
            raise MobileNetError(f"{path} {where}: alpha, resolution and top1 must be numbers, got {row}") from None
        if name not in list_models():
            raise MobileNetError(f"{path} {where}: unknown model {name!r} (see `mobilenet list`)")
        if not (alpha > 0 and res >= 1 and 0 <= top1 <= 100):
            raise MobileNetError(f"{path} {where}: need alpha > 0, resolution >= 1 and top1 in [0, 100] "
                                 f"(percent), got {alpha}, {res}, {top1}")
        out[(name, alpha, res)] = top1
    return out


def dominates(a: Candidate, b: Candidate, axes: Sequence[str]) -> bool:
    """Whether ``a`` is at least as good as ``b`` everywhere (cost on ``axes``, top-1) and strictly better once."""
    costs_a, costs_b = [getattr(a, k) for k in axes], [getattr(b, k) for k in axes]
    if any(x > y for x, y in zip(costs_a, costs_b)) or a.top1 < b.top1:
        return False
    return a.top1 > b.top1 or any(x < y for x, y in zip(costs_a, costs_b))


def pareto_front(cands: Sequence[Candidate], axes: Sequence[str] = ("mult_adds",)) -> list[Candidate]:
    """The candidates with a proxy that no other candidate dominates, cheapest first (ties in every value: one kept)."""
    scored = [c for c in cands if c.top1 is not None]
    scored.sort(key=lambda c: (tuple(getattr(c, k) for k in axes), -c.top1))
    front: list[Candidate] = []
    for c in scored:
        if not any(dominates(f, c, axes) or _same(f, c, axes) for f in front):
            front = [f for f in front if not dominates(c, f, axes)] + [c]
    return sorted(front, key=lambda c: (tuple(getattr(c, k) for k in axes), -c.top1))


def _same(a: Candidate, b: Candidate, axes: Sequence[str]) -> bool:
    return a.top1 == b.top1 and all(getattr(a, k) == getattr(b, k) for k in axes)


def measure_latency(name: str, alpha: float, resolution: int, backend: str = "torch", min_time: float = 0.3,
                    max_runs: int = 50) -> float:
    """Median batch-1 latency in ms of a freshly built model on ``backend`` (see ``mobilenet.deploy.backends``)."""
    from .deploy.backends import make_runner  # deploy pulls in ONNX tooling only for the ONNX backends
    from .timing import measure

    model = create_model(name, alpha=alpha, resolution=resolution).eval()
    runner = make_runner(model, backend)
    x = torch.randn(1, model.in_chans, resolution, resolution)
    # Warm-up covers the allocator, oneDNN primitive caches and compiled graphs.
    return 1e3 * measure(lambda: runner(x), min_time=min_time, max_runs=max_runs, warmup=3).median


def search(
    budget: Budget,
    models: str | Sequence[str] = "v1,v2,v3",
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    resolutions: Sequence[int] = DEFAULT_RESOLUTIONS,
    results: str | Path | None = None,
    backend: str | None = None,
    progress: bool = False,
) -> SearchResult:
    """Enumerates (model, α, resolution), keeps what fits ``budget`` and returns the Pareto front.

    Args:
        budget: the limits on Mult-Adds, params and batch-1 latency (ms); ``latency_ms`` needs ``backend``.
        models: families (``v1``, ``v2``, ``v3``) and/or registered names, comma-separated or a list.
        alphas: width multipliers α to try (default 0.25, 0.35, 0.5, 0.75, 1.0, 1.25, 1.4).
        resolutions: input sides to try (default 96 to 256 in steps of 32).
        results: a CSV/JSON file of measured top-1 (see :func:`load_results`); its configurations join the grid.
        backend: measure latency of front members on this backend (``"torch"`` eager, ``"torch-fast"``,
            ``"onnxruntime"``, ``"onnxruntime-int8"``).
        progress: show a progress bar while timing.
    """
    names = resolve_models(models)
    if budget.latency_ms is not None and backend is None:
        raise MobileNetError("a latency budget needs a backend to measure on, e.g. backend='torch'")
    measured = load_results(results) if results is not None else {}
    configs = {(n, float(a), int(r)) for n in names for a in alphas for r in resolutions}
    configs |= {k for k in measured if k[0] in names}
    table = CostCache()
    cands = []
    for name, alpha, res in sorted(configs):
        madds, params = table.cost(name, alpha, res)
        cands.append(Candidate(name, alpha, res, madds, params))
    fits = fit_proxies(table, names)
    for c in cands:
        if c.key in measured:
            c.top1, c.top1_source = measured[c.key], "measured"
        elif (c.alpha, c.resolution) in table.paper(c.model):
            c.top1, c.top1_source = table.paper(c.model)[(c.alpha, c.resolution)], "paper"
        elif c.model in fits:
            top1, how = fits[c.model](c.mult_adds)
            c.top1, c.top1_source = round(top1, 1), how
    fitting = [c for c in cands if budget.fits_cost(c)]
    axes = budget.axes()
    front = pareto_front(fitting, axes)
    if backend is not None:
        front = _latency_front(fitting, front, axes, budget, backend, progress)
    no_proxy = sorted({c.model for c in cands if c.top1 is None})
    timed = [c for c in fitting if c.latency_ms is not None]
    return SearchResult(len(cands), fitting, front, axes, no_proxy, timed)


def _latency_front(fitting, front, axes, budget: Budget, backend: str, progress: bool) -> list[Candidate]:
    """Times front members (lazily) and drops those over the latency limit until the front is all timed and fits."""
    from tqdm import tqdm

    pool = list(fitting)
    bar = tqdm(desc=f"timing on {backend}", unit="model", disable=not progress, leave=False)
    while True:
        untimed = [c for c in front if c.latency_ms is None]
        if not untimed:
            break
        for c in untimed:
            c.latency_ms = round(measure_latency(c.model, c.alpha, c.resolution, backend), 3)
            bar.update(1)
        if budget.latency_ms is not None:
            pool = [c for c in pool if c.latency_ms is None or c.latency_ms <= budget.latency_ms]
        front = pareto_front(pool, axes)
    bar.close()
    return front
