"""The benchmark harness in quick mode: every column is filled and consistent with the numbers it derives from."""

from __future__ import annotations

import csv
import json
import statistics
from types import SimpleNamespace

import pytest
import torch

import mobilenet
from mobilenet.bench import Row, gemm_peak, run_bench
from mobilenet.bench.breakdown import conv_kind
from mobilenet.bench.peaks import peak_kind
from mobilenet.deploy.backends import available_backends
from mobilenet.errors import MobileNetError
from mobilenet.timing import time_call

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def report():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from a second thread; one keeps a shared machine steady
    try:
        yield run_bench(["mobilenet_v2"], batches=(1, 2), quick=True, repeats=2)
    finally:
        torch.set_num_threads(threads)


def test_every_backend_and_batch_is_measured(report):
    got = {(r.backend, r.batch) for r in report.rows}
    assert got == {(b, n) for b in available_backends() for n in (1, 2)}


def test_derived_columns_are_consistent(report):
    # Mult-Adds from the cost counter; the rest must rank rows the way their latencies do at each batch size, with
    # the torch baseline at exactly 1x and no row above the machine's measured GEMM peak by more than noise.
    mult_adds = mobilenet.count_cost(mobilenet.create_model("mobilenet_v2", alpha=0.25, resolution=64)).mult_adds
    for batch in (1, 2):
        rows = sorted((r for r in report.rows if r.batch == batch), key=lambda r: r.latency_ms)
        assert all(r.mult_adds == mult_adds for r in rows)
        for faster, slower in zip(rows, rows[1:]):
            assert faster.images_per_s >= slower.images_per_s and faster.gmac_per_s >= slower.gmac_per_s
            assert faster.speedup_vs_torch >= slower.speedup_vs_torch
        torch_row = next(r for r in rows if r.backend == "torch")
        assert torch_row.speedup_vs_torch == 1.0
        # fp32 runtimes stay near torch.mm's rate; bf16 and int8 ones may beat torch's own bf16/int8 GEMM kernels
        # at the quick run's 512² size, so only positivity is asserted for them.
        assert all(0 < r.pct_of_peak for r in rows)
        assert all(r.pct_of_peak < 150 for r in rows if r.peak_kind == "fp32")
        for r in rows:  # % of peak is against the GEMM of the precision that ran, timed in the same rounds
            assert r.peak_kind == peak_kind(r.precision) and r.peak_gflops > 0
            assert r.pct_of_peak == pytest.approx(100 * 2 * r.gmac_per_s / r.peak_gflops)
        openvino = [r for r in rows if r.backend.startswith("openvino")]
        if openvino:  # the best OpenVINO row is exactly 1x itself; every ratio follows the latencies
            assert max(r.vs_openvino for r in openvino) == pytest.approx(1.0)
            best = min(r.latency_ms for r in openvino)
            assert all(r.vs_openvino == pytest.approx(best / r.latency_ms) for r in rows)


def test_breakdown_for_torch_backends_only(report):
    by_kind = mobilenet.count_cost(mobilenet.create_model("mobilenet_v2", alpha=0.25, resolution=64)).by_kind()
    for r in report.rows:
        fields = (r.dw_time_pct, r.pw_time_pct, r.other_time_pct, r.pw_gmac_per_s, r.mm_gmac_per_s, r.pw_pct_of_mm)
        if not r.backend.startswith("torch"):
            assert all(f is None for f in fields)
            continue
        assert all(f is not None and f >= 0 for f in fields)
        assert r.dw_time_pct > 0 and r.pw_time_pct > 0
        assert r.other_time_pct == pytest.approx(max(0.0, 100 - r.dw_time_pct - r.pw_time_pct))
        assert r.pw_madds_pct == pytest.approx(by_kind["pointwise"]["mult_adds_pct"])
        assert r.dw_madds_pct == pytest.approx(by_kind["depthwise"]["mult_adds_pct"])
        assert r.pw_pct_of_mm == pytest.approx(100 * r.pw_gmac_per_s / r.mm_gmac_per_s)
        # The profiled pointwise GEMM shapes add up exactly to the counter's pointwise Mult-Adds.
        assert r.pw_mult_adds == by_kind["pointwise"]["mult_adds"] * r.batch


def test_table_and_csv_have_every_column(report, tmp_path):
    text = report.table()
    for column in ("latency ms", "images/s", "GMAC/s", "% peak", "x eager", "x OV", "prec", "time % dw/pw/other",
                   "MAdds % dw/pw/other", "pointwise GMAC/s", "mm GMAC/s", "pw/mm %", "GEMM peaks", "int8 vs its fp32"):
        assert column in text
    markdown = report.markdown()
    assert "| model | batch | backend | precision |" in markdown and "× OpenVINO best" in markdown
    assert markdown.count("\n| mobilenet_v2") == len(report.rows)
    if any(r.backend.startswith("openvino") for r in report.rows):
        assert markdown.count("best without OpenVINO") == 2  # one per batch size
    path = report.write_csv(str(tmp_path / "b.csv"))
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == len(report.rows)
    assert set(Row.__dataclass_fields__) <= set(rows[0])
    assert report.csv_name().startswith("bench_") and "torch" in report.csv_name()


def test_csv_name_keeps_what_names_the_cpu():
    from mobilenet.bench import Report

    def name(machine):
        return Report(machine, 2, {"torch": "2.13.0+cpu", "onnxruntime": "1.32.0"}, 0.0).csv_name()

    assert name("Intel(R) Xeon(R) Processor 2cpu avx512+vnni+bf16+amx") == \
        "bench_intel-xeon-2cpu-avx512-vnni-bf16-amx_2t_torch2.13.0_ort1.32.0.csv"
    assert name("Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz 2cpu avx512+vnni+bf16+amx").startswith(
        "bench_intel-xeon-platinum-8480-2cpu-")
    assert name("AMD EPYC 2cpu avx2") == "bench_amd-epyc-2cpu-avx2_2t_torch2.13.0_ort1.32.0.csv"
    assert name("Intel(R) Xeon(R) CPU @ 2.10GHz (family 6 model 143) 2cpu avx512").startswith(
        "bench_intel-xeon-family-6-model-143-2cpu-avx512_")


def test_csv_reads_back_into_the_same_report(report, tmp_path):
    from mobilenet.bench import Report

    first, second = tmp_path / "a.csv", tmp_path / "b.csv"  # two runs joined, e.g. one model each
    half = len(report.rows) // 2
    Report(report.machine, report.threads, report.versions, 0.0, report.rows[:half]).write_csv(str(first))
    Report(report.machine, report.threads, report.versions, 0.0, report.rows[half:]).write_csv(str(second))
    back = Report.read_csv([str(first), str(second)])
    assert (back.machine, back.threads, back.versions) == (report.machine, report.threads, report.versions)
    assert len(back.rows) == len(report.rows)
    for got, want in zip(back.rows, report.rows):
        for name, value in vars(want).items():
            assert getattr(got, name) == (pytest.approx(value, abs=1e-4) if isinstance(value, float) else value)
    assert back.peaks["fp32"] == pytest.approx(statistics.median(r.peak_gflops for r in report.rows
                                                                 if r.peak_kind == "fp32"), abs=1e-4)
    assert back.markdown().count("\n| mobilenet_v2") == len(report.rows)
    with pytest.raises(MobileNetError, match="not a CSV written by mobilenet bench"):
        (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
        Report.read_csv([str(tmp_path / "bad.csv")])
    with pytest.raises(MobileNetError, match="cannot read"):
        Report.read_csv([str(tmp_path / "missing.csv")])


def test_a_stopped_run_keeps_every_finished_measurement():
    seen = []
    report = run_bench(["mobilenet_v1"], batches=(1, 2), backends=["torch"], quick=True, repeats=1,
                       breakdown=False, on_rows=lambda r: seen.append(len(r.rows)))
    assert seen == [1, 2] and len(report.rows) == 2  # called after each model x batch with the rows so far


def test_conv_kind_reads_weight_shapes():
    def event(name, shapes, parent=None):
        return SimpleNamespace(name=name, input_shapes=shapes, cpu_parent=parent)

    # eager conv2d: (input, weight, bias); compiled binary conv: (other, input, weight, bias)
    assert conv_kind(event("aten::conv2d", [[2, 16, 8, 8], [32, 16, 1, 1], [32]])) == ("pointwise", (128, 16, 32))
    assert conv_kind(event("mkldnn::_convolution_pointwise_", [[1, 8, 4, 4], [1, 24, 4, 4], [8, 24, 1, 1], [8]])) \
        == ("pointwise", (16, 24, 8))
    assert conv_kind(event("aten::conv2d", [[1, 32, 8, 8], [32, 1, 3, 3], [32]]))[0] == "depthwise"
    # torch-int8's oneDNN ops as the profiler records them: (input, scale, zero point, weight, ...), and the fused
    # add's accumulator after the weight
    assert conv_kind(event("onednn::qconv_pointwise", [[1, 512, 14, 14], [], [], [512, 512, 1, 1], [512]])) \
        == ("pointwise", (196, 512, 512))
    assert conv_kind(event("onednn::qconv2d_pointwise", [[2, 24, 8, 8], [], [], [40, 24, 1, 1], [40], [],
                                                         [2, 40, 8, 8]])) == ("pointwise", (128, 24, 40))
    assert conv_kind(event("onednn::qconv_pointwise", [[1, 64, 8, 8], [], [], [64, 1, 3, 3]]))[0] == "depthwise"
    assert conv_kind(event("aten::conv2d", [[1, 3, 8, 8], [16, 3, 3, 3], [16]]))[0] == "conv"
    outer = event("aten::conv2d", [[1, 3, 8, 8], [16, 3, 3, 3]])
    assert conv_kind(event("aten::convolution", [[1, 3, 8, 8], [16, 3, 3, 3]], parent=outer)) == (None, None)
    assert conv_kind(event("aten::add", [[1, 3, 8, 8], [1, 3, 8, 8]])) == (None, None)


def test_timing_helpers():
    calls = []
    times = time_call(lambda: calls.append(1), 2, 5)
    assert len(times) == 5 and len(calls) == 7 and all(t >= 0 for t in times)
    for kind in ("fp32", "bf16", "int8"):
        assert gemm_peak(128, 2, kind) > 0


def test_gemm_references_shrink_to_a_bounded_call():
    from mobilenet.bench.peaks import KINDS, gemm_sizes

    # A reference kernel (no VNNI, no AVX512-BF16) runs 100x slower than fp32: its side halves until a call fits.
    assert gemm_sizes(1024, call_seconds=1e9) == dict.fromkeys(KINDS, 1024)
    assert gemm_sizes(1024, call_seconds=1e-9) == dict.fromkeys(KINDS, 256)


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_reference_is_the_fastest_gemm(kind):
    from mobilenet.bench.peaks import GEMMS, fastest_gemm, gemm_rate
    from mobilenet.timing import measure

    rates = {}
    for name, make in GEMMS[kind].items():
        try:
            call = make(256)
        except ImportError:  # onnxruntime not installed
            continue
        call()
        rates[name] = gemm_rate(256, measure(call, min_time=0.0, max_runs=5).median)
    chosen = fastest_gemm(kind)
    # Timing noise may swap two close kernels; a kernel several times slower is never the reference.
    assert rates[chosen] >= 0.5 * max(rates.values())


def test_unknown_backend_is_an_error():
    with pytest.raises(MobileNetError, match="unknown backend"):
        run_bench(["mobilenet_v1"], backends=["tensorrt"], quick=True)


def test_a_backend_that_cannot_be_built_is_skipped_and_said(monkeypatch):
    from mobilenet.bench import harness

    real = harness.make_runner

    def failing(model, backend, **kwargs):
        if backend == "onnxruntime":
            raise MobileNetError("ONNX Runtime cannot load this graph")
        return real(model, backend, **kwargs)

    monkeypatch.setattr(harness, "make_runner", failing)
    report = run_bench(["mobilenet_v1"], batches=(1,), backends=["torch-fast", "onnxruntime"], quick=True,
                       repeats=1, breakdown=False)
    assert {r.backend for r in report.rows} == {"torch", "torch-fast"}
    assert report.skipped == ["mobilenet_v1 onnxruntime: ONNX Runtime cannot load this graph"]
    assert "not measured: mobilenet_v1 onnxruntime" in report.markdown()


def test_cli_bench_quick_json_and_csv(tmp_path, capsys):
    from mobilenet.cli.main import main

    path = tmp_path / "out.csv"
    assert main(["bench", "mobilenet_v1", "--quick", "--batch", "1", "--backend", "onnxruntime", "--repeats", "2",
                 "--json", "--csv", str(path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert {(r["backend"], r["batch"]) for r in lines} == {("torch", 1), ("onnxruntime", 1)}
    for r in lines:
        assert {"model", "backend", "batch", "latency_ms", "images_per_s"} <= set(r)
        assert r["model"] == "mobilenet_v1"
    assert path.exists()
    assert main(["bench", "--from-csv", str(path), "--markdown"]) == 0  # the saved run's table, nothing measured
    assert capsys.readouterr().out.count("\n| mobilenet_v1") == 2
    assert main(["bench", "--from-csv", str(tmp_path / "none.csv")]) == 2  # a one-line error, no traceback
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--batch", "0"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:  # argparse expands % in help texts: every one must be escaped
        main(["bench", "--help"])
    assert exit_info.value.code == 0 and "--markdown" in capsys.readouterr().out


def test_machine_name_says_which_matrix_instructions_the_cpu_has():
    from mobilenet.timing import describe_cpu

    zen3 = ("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n\n"
            "processor\t: 1\nmodel name\t: X\n")
    assert describe_cpu(zen3, 2) == "AMD EPYC 2cpu avx2"
    zen4 = "model name\t: AMD EPYC\nflags\t: avx2 avx512f avx512_vnni avx512_bf16\n"
    assert describe_cpu(zen4, 2) == "AMD EPYC 2cpu avx512+vnni+bf16"
    xeon = "model name\t: Intel(R) Xeon(R)\nflags\t: avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8\n"
    assert describe_cpu(xeon, 2) == "Intel(R) Xeon(R) 2cpu avx512+vnni+bf16+amx"
    zen5 = "model name\t: AMD EPYC\ncpu family\t: 26\nmodel\t\t: 2\nflags\t: avx2 avx512f avx512_vnni avx512_bf16\n"
    assert describe_cpu(zen5, 2) == "AMD EPYC (family 26 model 2) 2cpu avx512+vnni+bf16"  # not Zen 4's name
    assert describe_cpu("", 4).endswith(" 4cpu")  # no /proc/cpuinfo: the platform's name


def test_profiler_chatter_is_dropped_and_other_stderr_kept(capfd):
    import os

    from torch.profiler import profile

    from mobilenet.native_stderr import dropping

    with dropping("USDT:", "STAGE:"), profile():
        torch.ones(4).sum()
        os.write(2, b"USDT:2026-01-01 1:1 Handler.cpp:52] profiler_start\na real warning\n")
    assert capfd.readouterr().err == "a real warning\n"


def test_measured_batch_norm_holds_the_statistics_of_the_images():
    import mobilenet
    from mobilenet.bench.harness import measured_batch_norm

    model = mobilenet.create_model("mobilenet_v1", alpha=0.25, resolution=32).eval()
    x = torch.randn(48, 3, 32, 32)
    conv, bn = model.features[0].conv, model.features[0].bn
    with torch.no_grad():
        y = conv(x)
    measured_batch_norm(model, x, chunk=16)  # three chunks of 16, averaged alike
    assert not model.training and not bn.training and bn.momentum == 0.1
    torch.testing.assert_close(bn.running_mean, y.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    # Each chunk's unbiased variance, averaged: close to the whole batch's, not equal.
    torch.testing.assert_close(bn.running_var, y.var((0, 2, 3)), rtol=0.05, atol=1e-4)
