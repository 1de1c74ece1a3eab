"""The timing primitives: what they count, and that a backend timed in alternated blocks runs as if alone."""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import torch

from mobilenet.timing import SETTLE, SETTLE_TIME, Timing, alternate, measure, time_call


def test_time_call_and_measure_count_calls():
    calls = []
    assert len(time_call(lambda: calls.append(1), 2, 5)) == 5 and len(calls) == 7
    calls.clear()
    t = measure(lambda: calls.append(1), min_time=0.0, max_runs=3, warmup=1)
    assert len(t.times) == 3 and len(calls) == 4 and t.median >= 0
    assert measure(lambda: sum(range(100)), min_time=0.01).median > 0  # torch.utils.benchmark's blocked_autorange


def test_alternate_rotates_blocks_and_settles():
    order = []
    fns = {name: (lambda n=name: order.append(n)) for name in "abc"}
    timings = alternate(fns, rounds=3, block={"a": 2, "b": 1, "c": 1}, warmup=1, settle=1)
    assert order[:3] == ["a", "b", "c"]  # warm-up
    blocks = order[3:]
    # round 0: a b c, round 1: b c a, round 2: c a b; each block is one settling call and then the timed ones
    assert blocks == ["a"] * 3 + ["b"] * 2 + ["c"] * 2 + ["b"] * 2 + ["c"] * 2 + ["a"] * 3 + ["c"] * 2 + ["a"] * 3 \
        + ["b"] * 2
    assert [len(timings[n].times) for n in "abc"] == [6, 3, 3] and len(timings["a"].blocks) == 3


def test_spread_is_relative_interquartile_range():
    assert Timing([1.0, 1.0, 1.0, 1.0]).spread == 0
    assert Timing([1.0, 2.0, 3.0, 4.0, 5.0]).spread == pytest.approx((4.5 - 1.5) / 3)


def test_lower_quartile_ignores_interrupted_calls():
    # Half the calls interrupted (twice as slow): the median lands between the two groups, the quartile does not.
    steady, hit = [1.0, 1.01, 0.99, 1.0], [2.0, 2.02, 1.98, 2.0]
    assert Timing(steady + hit).lower_quartile < 1.02 < Timing(steady + hit).median
    assert Timing([3.0, 1.0]).lower_quartile == 1.0  # too few calls for quartiles: the fastest


def test_onnxruntime_after_torch_blocks_runs_as_if_alone():
    # torch's OpenMP threads keep spinning after each call; one call per backend per round would charge that to
    # whatever runs next. In blocks with the benchmark's settling calls, ONNX Runtime measured right after
    # torch must be within 15 % of ONNX Runtime measured alone. Medians of paired repeats keep a shared machine's
    # noise out.
    pytest.importorskip("onnxruntime")
    from mobilenet.deploy.backends import make_runner
    from mobilenet.models import create_model

    model = create_model("mobilenet_v2", alpha=0.35, resolution=32).eval()
    x = torch.randn(1, 3, 32, 32)
    eager, ort = make_runner(model, "torch"), make_runner(model, "onnxruntime")
    calls = {"torch": lambda: eager(x), "onnxruntime": lambda: ort(x)}
    ratios = []
    for _ in range(7):  # few torch calls: on an oversubscribed machine each 2-thread eager call can take 0.1 s
        alone = alternate({"onnxruntime": calls["onnxruntime"]}, rounds=2, block=6, settle=SETTLE,
                          settle_time=SETTLE_TIME)["onnxruntime"].median
        after = alternate(calls, rounds=2, block={"torch": 2, "onnxruntime": 6}, settle=SETTLE,
                          settle_time=SETTLE_TIME)["onnxruntime"].median
        ratios.append(after / alone)
    assert abs(statistics.median(ratios) - 1) < 0.15, ratios


def test_settling_outlasts_onnxruntime_spinning_threads(tmp_path):
    # ONNX Runtime's idle workers spin for tens of milliseconds after a call, longer than torch's or OpenVINO's; a
    # block timed before they stop shares the cores with them. The settling time must outlast that spin.
    import glob
    import os

    pytest.importorskip("onnxruntime")
    from mobilenet.deploy import export_onnx
    from mobilenet.deploy.onnx_io import ort_session
    from mobilenet.models import create_model

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: ONNX Runtime runs without worker threads")
    path = str(tmp_path / "m.onnx")
    export_onnx(create_model("mobilenet_v2", alpha=0.35, resolution=96).eval(), path, num_images=2)
    tasks = f"/proc/{os.getpid()}/task"
    if not os.path.isdir(tasks):
        pytest.skip("no /proc: thread states cannot be read here")
    before = set(os.listdir(tasks))
    session = ort_session(path, 2)
    x = np.random.default_rng(0).random((1, 3, 96, 96), dtype=np.float32)
    for _ in range(20):
        session.run(None, {"input": x})
    workers = [t for t in glob.glob(f"{tasks}/*") if os.path.basename(t) not in before]
    start, last_running = time.perf_counter(), 0.0
    while time.perf_counter() - start < 0.5:
        for t in workers:
            with open(f"{t}/stat") as f:
                stat = f.read()
            if stat[stat.rindex(")") + 2] == "R":
                last_running = time.perf_counter() - start
        time.sleep(0.0005)
    if last_running == 0.0:
        pytest.skip("ONNX Runtime's workers did not spin here")
    assert last_running < SETTLE_TIME, f"ONNX Runtime's workers spun {last_running * 1e3:.1f} ms"
