"""Budget search: the most accurate (model, α, resolution) that fits N Mult-Adds, P parameters or L milliseconds.

The search enumerates a grid of configurations, counts each one's exact cost with :func:`mobilenet.cost.count_cost`
(each (model, α) is built once, on PyTorch's ``meta`` device so no weights are allocated, and counted at every
resolution), keeps those within the budget and returns the Pareto front of cost against an accuracy proxy.

Accuracy proxy, per configuration, with its ``top1_source``:

* ``"measured"``: top-1 from a results file the user gives (CSV or JSON rows with ``model``, ``alpha``,
  ``resolution``, ``top1`` in percent); configurations in the file join the grid.
* ``"published"``: the ImageNet top-1 published for exactly this configuration: the papers' tables and the released
  checkpoint grids (V1's 16, V2's 22, V3's, V4's; ``../shared/papers.md``), registered with each model
  (:func:`mobilenet.models.published_table`).
* ``"interpolated"``: between published points only. Per family (``FAMILIES``: V1, V2, V3 Large + Small, V4's five;
  a model outside every family is its own), the published points are placed at their exact Mult-Adds as counted
  here and joined by straight lines in (ln Mult-Adds, top-1) through the running best, the most accurate published
  point at or below each cost (so a cheaper configuration is never rated above a dearer published one merely because
  the grid zigzags); a configuration gets the line's value at its Mult-Adds. A configuration cheaper than the
  family's cheapest published point or dearer than its dearest has no proxy and is left out of the front: nothing is
  extrapolated. ``interpolation_errors`` holds each published point out in turn and reports how far the rest
  predict it.
Cost axes of the front: Mult-Adds, plus parameters when a parameter budget is given. A configuration is dominated when
another one costs no more on every axis and has a higher proxy, or an equal proxy at a strictly lower cost.

Latency (``latency_ms`` with a ``backend``) is measured at batch 1 lazily: only configurations on the current front
are timed; those over the limit are dropped and the front is recomputed, until every front member is timed and fits.
So the front is exactly the front of the configurations that meet the latency limit, with a few timings at most.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
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
    "v4": ("mobilenet_v4_conv_small", "mobilenet_v4_conv_medium", "mobilenet_v4_conv_large",
           "mobilenet_v4_hybrid_medium", "mobilenet_v4_hybrid_large"),
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
    top1_source: str | None = None  # "measured", "published", "interpolated" or None (no proxy)
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
    no_proxy: list[Candidate] = field(default_factory=list)  # fitting, but outside their family's published range
    timed: list[Candidate] = field(default_factory=list)  # every configuration whose latency was measured


def resolve_models(names: str | Sequence[str]) -> list[str]:
    """Expands family names (``v1`` … ``v4``) and checks registered names; order kept, duplicates dropped."""
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
    """Exact costs and published top-1 of configurations, building each (model, α) once on the meta device."""

    def __init__(self):
        self._built: dict[tuple[str, float], torch.nn.Module] = {}
        self._costs: dict[tuple[str, float, int], tuple[int, int]] = {}
        self._published: dict[str, dict[tuple[float, int], float]] = {}

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

    def published(self, name: str) -> dict[tuple[float, int], float]:
        """The published top-1 per (α, resolution) for this model (the registry's published table)."""
        if name not in self._published:
            self._published[name] = {(float(a), int(r)): float(row[0])
                                     for (a, r), row in published_table(name).items()}
        return self._published[name]

    def points(self, names: Iterable[str]) -> list[tuple[int, float, tuple[str, float, int]]]:
        """(exact Mult-Adds, top-1, configuration) of every published point of the models ``names``."""
        return [(self.cost(n, a, r)[0], top1, (n, a, r)) for n in names for (a, r), top1 in self.published(n).items()]


@dataclass(frozen=True)
class Interpolation:
    """top-1 between published points: straight lines in (ln Mult-Adds, top-1) through the running best."""

    log_madds: tuple[float, ...]  # increasing
    top1: tuple[float, ...]  # non-decreasing

    @classmethod
    def through(cls, points: Iterable[tuple[int, float]]) -> Interpolation | None:
        """The curve through ``(Mult-Adds, top-1)`` points; ``None`` without any point."""
        best: dict[int, float] = {}
        for madds, top1 in points:
            best[madds] = max(top1, best.get(madds, -math.inf))
        xs, ys, running = [], [], -math.inf
        for madds in sorted(best):
            running = max(running, best[madds])
            xs.append(math.log(madds))
            ys.append(running)
        return cls(tuple(xs), tuple(ys)) if xs else None

    def __call__(self, mult_adds: int) -> float | None:
        """The proxy at ``mult_adds``; ``None`` outside the published range (no extrapolation)."""
        x = math.log(mult_adds)
        if not self.log_madds[0] <= x <= self.log_madds[-1]:
            return None
        i = bisect.bisect_left(self.log_madds, x)
        if self.log_madds[i] == x:
            return self.top1[i]
        x0, x1, y0, y1 = self.log_madds[i - 1], self.log_madds[i], self.top1[i - 1], self.top1[i]
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def family_of(name: str) -> tuple[str, ...]:
    """The models whose published points interpolate for ``name``: its ``FAMILIES`` entry, or itself alone."""
    return next((names for names in FAMILIES.values() if name in names), (name,))


def fit_proxies(table: CostCache, models: Iterable[str]) -> dict[str, Interpolation]:
    """Per model, the interpolation through its family's published points (models with none are left out)."""
    curves: dict[tuple[str, ...], Interpolation | None] = {}
    out = {}
    for name in models:
        family = family_of(name)
        if family not in curves:
            curves[family] = Interpolation.through((m, t) for m, t, _ in table.points(family))
        if curves[family] is not None:
            out[name] = curves[family]
    return out


def interpolation_errors(family: str | Sequence[str], table: CostCache | None = None) -> dict:
    """Holds out each published point of a family strictly inside its Mult-Adds range and predicts it from the rest.

    Returns ``{configuration: predicted − published}`` (top-1 points) for every held-out point the rest still cover.
    """
    names = FAMILIES[family] if isinstance(family, str) else tuple(family)
    table = table or CostCache()
    points = table.points(names)
    errors = {}
    for i, (madds, top1, key) in enumerate(points):
        rest = Interpolation.through((m, t) for j, (m, t, _) in enumerate(points) if j != i)
        predicted = rest(madds) if rest is not None else None
        if predicted is not None:
            errors[key] = predicted - top1
    return errors


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
        models: families (``v1`` … ``v4``) and/or registered names, comma-separated or a list.
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
        elif (c.alpha, c.resolution) in table.published(c.model):
            c.top1, c.top1_source = table.published(c.model)[(c.alpha, c.resolution)], "published"
        elif c.model in fits and (top1 := fits[c.model](c.mult_adds)) is not None:
            c.top1, c.top1_source = round(top1, 1), "interpolated"
    fitting = [c for c in cands if budget.fits_cost(c)]
    axes = budget.axes()
    front = pareto_front(fitting, axes)
    if backend is not None:
        front = _latency_front(fitting, front, axes, budget, backend, progress)
    no_proxy = [c for c in fitting if c.top1 is None]
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
