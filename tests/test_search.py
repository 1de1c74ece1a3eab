"""Budget search: exact costs within the budget, an undominated and complete front, proxies, results files, errors."""

import json
import math

import pytest

import mobilenet.search as search_module
from mobilenet import count_cost, create_model
from mobilenet.cli import main
from mobilenet.errors import MobileNetError
from mobilenet.models import published_table
from mobilenet.search import (
    DEFAULT_ALPHAS,
    DEFAULT_RESOLUTIONS,
    Budget,
    Candidate,
    Interpolation,
    interpolation_errors,
    pareto_front,
    resolve_models,
    search,
)


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def worse_or_equal(g, f, axes):
    """g is at least as good as f on every axis and top-1 (so f would be dominated if g is strictly better once)."""
    return all(getattr(g, a) <= getattr(f, a) for a in axes) and g.top1 >= f.top1


def strictly_dominates(g, f, axes):
    return worse_or_equal(g, f, axes) and (g.top1 > f.top1 or any(getattr(g, a) < getattr(f, a) for a in axes))


@pytest.fixture(scope="module")
def grid_costs():
    """Every default-grid configuration counted independently: each (model, α) built with real weights."""
    costs = {}
    for name in resolve_models("v1,v2,v3"):  # the default --models
        for alpha in DEFAULT_ALPHAS:
            model = create_model(name, alpha=alpha)
            for res in DEFAULT_RESOLUTIONS:
                c = count_cost(model, res)
                costs[(name, alpha, res)] = (c.mult_adds, c.params)
    return costs


def test_cli_front_is_within_budget_exact_and_undominated(capsys, grid_costs):
    code, out, _ = run(capsys, "search", "--macs", "150M", "--json")
    assert code == 0
    rows = json.loads(out)
    assert rows and {"model", "alpha", "resolution", "mult_adds", "params"} <= set(rows[0])
    fitting = [Candidate(**{k: v for k, v in zip(("model", "alpha", "resolution"), key)},
                         mult_adds=m, params=p) for key, (m, p) in grid_costs.items() if m <= 150_000_000]
    result = search(Budget(mult_adds=150_000_000))
    assert sorted(c.key for c in result.fitting) == sorted(c.key for c in fitting)
    proxies = {c.key: c.top1 for c in result.fitting}
    for c in fitting:
        c.top1 = proxies[c.key]
    fitting = [c for c in fitting if c.top1 is not None]  # outside the published range: no proxy, not ranked
    for row in rows:
        key = (row["model"], row["alpha"], row["resolution"])
        assert (row["mult_adds"], row["params"]) == grid_costs[key]
        assert row["mult_adds"] <= 150_000_000
        f = Candidate(**row)
        assert not any(strictly_dominates(g, f, ["mult_adds"]) for g in fitting), key
    # Complete: every fitting configuration left out is matched or beaten by a listed one.
    listed = [Candidate(**row) for row in rows]
    for c in fitting:
        if c.key not in {f.key for f in listed}:
            assert any(worse_or_equal(f, c, ["mult_adds"]) for f in listed), c.key


def test_published_rows_and_interpolation_between_them():
    result = search(Budget(), models="v2,v3", alphas=[0.3, 0.75, 1.0, 1.4], resolutions=[96, 160, 224, 256])
    by_key = {c.key: c for c in result.fitting}
    for c in result.fitting:
        published = published_table(c.model).get((c.alpha, c.resolution))
        assert (c.top1_source == "published") == (published is not None), c.key
        if published:
            assert c.top1 == published[0]
    # V2 1.0/256 lies between 1.0/224 (71.8 published by the checkpoint table, 72.0 by the paper, which wins) and
    # 1.4/224 (74.7): its proxy lies between them, never above the dearer point.
    mid = by_key[("mobilenet_v2", 1.0, 256)]
    assert mid.top1_source == "interpolated" and 72.0 <= mid.top1 <= 74.7
    # Nothing is extrapolated: beyond the family's dearest published point and below its cheapest, no proxy.
    assert by_key[("mobilenet_v2", 1.4, 256)].top1 is None
    assert by_key[("mobilenet_v2", 0.3, 96)].top1 is None
    assert {c.key for c in result.no_proxy} >= {("mobilenet_v2", 1.4, 256), ("mobilenet_v2", 0.3, 96)}


def test_interpolation_is_linear_in_log_mult_adds_through_the_running_best():
    curve = Interpolation.through([(100, 60.0), (400, 70.0), (200, 58.0), (800, 72.0)])
    assert curve(100) == 60.0 and curve(400) == 70.0 and curve(800) == 72.0
    assert curve(200) == 60.0  # 58.0 at 200 is below the cheaper 60.0: the running best is 60.0 there
    assert math.isclose(curve(math.sqrt(200 * 400)), 65.0)  # halfway in log between 200 and 400
    assert curve(99) is None and curve(801) is None


def test_acceptance_v2_035_at_96_is_published(capsys):
    code, out, _ = run(capsys, "search", "--macs", "12M", "--models", "v2")
    row = next(line for line in out.splitlines() if line.startswith("mobilenet_v2"))
    assert code == 0 and row.split()[1:3] == ["0.35", "96"] and "45.5%" in row and "published" in row


@pytest.mark.parametrize("family", ["v1", "v2", "v3", "v4"])
def test_held_out_published_points_are_predicted_by_the_rest(family, capsys):
    # Each published point strictly inside its family's Mult-Adds range, held out and interpolated from the rest.
    errors = interpolation_errors(family)
    assert errors, family
    mae = sum(abs(e) for e in errors.values()) / len(errors)
    worst = max(errors, key=lambda k: abs(errors[k]))
    with capsys.disabled():
        print(f"\n{family}: {len(errors)} held-out points, mean |error| {mae:.2f}, max {errors[worst]:+.2f} top-1 "
              f"points at {worst}")
    # A proxy, not a prediction: within the spread of the papers' own α-versus-ρ trade-offs.
    assert mae < 1.5 and abs(errors[worst]) < 3.5


def test_params_budget_adds_an_axis():
    result = search(Budget(mult_adds=300_000_000, params=2_000_000), alphas=[0.35, 0.5, 0.75, 1.0],
                    resolutions=[128, 192, 224])
    assert result.axes == ("mult_adds", "params") and result.front
    for f in result.front:
        assert f.mult_adds <= 300_000_000 and f.params <= 2_000_000
        assert not any(strictly_dominates(g, f, result.axes) for g in result.fitting if g.top1 is not None)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_measured_results_override_and_join_the_grid(tmp_path, capsys, fmt):
    rows = [{"model": "mobilenet_v3_small", "alpha": 0.9, "resolution": 200, "top1": 99.0},
            {"model": "mobilenet_v3_small", "alpha": 1.0, "resolution": 224, "top1": 10.0}]
    path = tmp_path / f"results.{fmt}"
    if fmt == "csv":
        path.write_text("model,alpha,resolution,top1\n" + "".join(
            f"{r['model']},{r['alpha']},{r['resolution']},{r['top1']}\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    code, out, _ = run(capsys, "search", "--models", "v3", "--alphas", "1.0", "--resolutions", "224",
                       "--results", str(path), "--json")
    assert code == 0
    front = json.loads(out)
    assert [(r["alpha"], r["resolution"], r["top1"], r["top1_source"]) for r in front] == [(0.9, 200, 99.0,
                                                                                             "measured")]
    exact = count_cost(create_model("mobilenet_v3_small", alpha=0.9, resolution=200))
    assert (front[0]["mult_adds"], front[0]["params"]) == (exact.mult_adds, exact.params)


def test_lazy_latency_filter_gives_the_front_of_the_fast_enough(monkeypatch):
    timed = []

    def fake_latency(name, alpha, resolution, backend="torch", **_):
        timed.append((name, alpha, resolution))
        return count_cost(create_model(name, alpha=alpha), resolution).mult_adds / 1e7 * (
            3 if "large" in name else 1)

    monkeypatch.setattr(search_module, "measure_latency", fake_latency)
    grid = dict(models="v3", alphas=[0.5, 1.0, 1.25], resolutions=[128, 224])
    result = search(Budget(latency_ms=12.0), backend="torch", **grid)
    searched_timings = len(timed)
    everything = search(Budget(), **grid).fitting
    for c in everything:
        c.latency_ms = fake_latency(c.model, c.alpha, c.resolution)
    expected = pareto_front([c for c in everything if c.latency_ms <= 12.0])
    assert [c.key for c in result.front] == [c.key for c in expected]
    assert all(c.latency_ms <= 12.0 for c in result.front)
    assert searched_timings < len(everything)  # only front members were timed, not every configuration


def test_real_latency_measurement_orders_models_by_cost():
    # 200x the Mult-Adds (V1 α = 1 at 160 px vs V3-Small α = 0.25 at 32 px) cannot time faster, however noisy.
    small = search_module.measure_latency("mobilenet_v3_small", 0.25, 32, "torch", min_time=0.0, max_runs=5)
    large = search_module.measure_latency("mobilenet_v1", 1.0, 160, "torch", min_time=0.0, max_runs=5)
    assert 0 < small < large


def test_backend_choices_are_the_deploy_backends():
    from mobilenet.cli.main import build_parser
    from mobilenet.deploy.backends import BACKENDS

    parser = build_parser()
    for backend in BACKENDS:
        assert parser.parse_args(["search", "--macs", "1M", "--backend", backend]).backend == backend
    with pytest.raises(SystemExit):
        parser.parse_args(["search", "--macs", "1M", "--backend", "no-such-backend"])


def test_text_output_and_empty_budget(capsys):
    code, out, _ = run(capsys, "search", "--macs", "60M", "--models", "v3", "--alphas", "1.0")
    assert code == 0 and "Pareto front" in out and "mobilenet_v3_small" in out and "published" in out
    code, out, err = run(capsys, "search", "--macs", "1K")
    assert code == 1 and "nothing fits" in err
    code, out, _ = run(capsys, "search", "--macs", "1K", "--json")
    assert code == 0 and json.loads(out) == []


@pytest.mark.parametrize("argv, needle", [
    (["--macs", "abc"], "--macs"),
    (["--params", "-2M"], "--params"),
    (["--alphas", "0,1"], "--alphas"),
    (["--resolutions", "96,x"], "--resolutions"),
    (["--models", "v9"], "unknown model"),
    (["--results", "/nonexistent/results.csv"], "does not exist"),
    (["--latency-ms", "0"], "--latency-ms"),
    (["--backend", "tensorrt"], "--backend"),
])
def test_parse_errors_are_one_line(capsys, argv, needle):
    code, out, err = run(capsys, "search", *argv)
    assert code == 2 and needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("text, needle", [
    ("model,alpha,resolution\nmobilenet_v2,1.0,224\n", "missing field 'top1'"),
    ("model,alpha,resolution,top1\nmobilenet_v2,one,224,70\n", "must be numbers"),
    ("model,alpha,resolution,top1\nmobilenet_v2,1.0,224,170\n", "top1 in [0, 100]"),
    ("model,alpha,resolution,top1\nresnet50,1.0,224,70\n", "unknown model"),
    ("[{\"model\": \"mobilenet_v2\"", "not valid JSON"),
])
def test_bad_results_files(tmp_path, text, needle):
    path = tmp_path / "r.csv"
    path.write_text(text)
    with pytest.raises(MobileNetError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        search_module.load_results(path)
