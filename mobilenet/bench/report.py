"""A benchmark run's rows and how they are shown: a console table, a markdown table with ratios, CSV and JSON."""

from __future__ import annotations

import csv
import json
import os
import re
import statistics
from dataclasses import asdict, dataclass, field

from ..errors import MobileNetError


@dataclass
class Row:
    """One model × backend × batch, timed as if the backend ran alone.

    ``precision`` is what the backend actually ran; ``pct_of_peak`` is against the GEMM peak of that precision
    (``peak_gflops``, timed in the same rounds). ``vs_openvino`` is OpenVINO's best latency on the same model and
    batch divided by this row's (above 1: faster than OpenVINO's best). Breakdown fields are ``None`` except for
    the torch backends.
    """

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
    precision: str = "fp32"
    peak_kind: str = "fp32"
    peak_gflops: float = 0.0
    spread_pct: float = 0.0
    vs_openvino: float | None = None
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
    """A benchmark run: the machine, the GEMM peaks measured in it (median per precision), and its rows."""

    machine: str
    threads: int
    versions: dict
    gemm_peak_gflops: float
    rows: list[Row] = field(default_factory=list)
    peaks: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # "model backend: why", for backends that could not be built

    def csv_name(self) -> str:
        """``bench_<cpu>_<threads>t_torch<v>_ort<v>.csv``, so runs on other machines or versions never collide."""
        # Trademark marks, the word "Processor" and the clock name nothing: "Intel(R) Xeon(R) Processor" ->
        # "intel-xeon"; the family and model numbers stay ("amd-epyc-family-26-model-2").
        plain = re.sub(r"\((r|tm|c)\)|\bprocessor\b|\bcpu @ *[\d.]+ *[gm]hz", " ", self.machine.lower())
        slug = re.sub(r"[^a-z0-9]+", "-", plain).strip("-")
        return (f"bench_{slug}_{self.threads}t_torch{self.versions['torch'].split('+')[0]}"
                f"_ort{self.versions.get('onnxruntime', 'none')}.csv")

    def write_csv(self, path: str) -> str:
        """Writes every row (with the machine, threads and library versions) to ``path``, replacing it atomically:
        a run stopped while writing leaves the previous file whole."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        versions = "; ".join(f"{k} {v}" for k, v in self.versions.items())
        with open(f"{path}.tmp", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["machine", "threads", "versions", *Row.__dataclass_fields__])
            writer.writeheader()
            for row in self.rows:
                writer.writerow({"machine": self.machine, "threads": self.threads, "versions": versions,
                                 **_rounded(asdict(row))})
        os.replace(f"{path}.tmp", path)
        return path

    @classmethod
    def read_csv(cls, paths: list[str]) -> Report:
        """The report written by :meth:`write_csv` to one or more files (separate runs on one machine, e.g. one
        model each), so its tables can be printed again; peaks are the medians of the rows' own.

        Raises:
            MobileNetError: a missing file, or one that is not a bench CSV.
        """
        rows, machine, threads, versions = [], "", 0, {}
        for path in paths:
            try:
                with open(path, newline="") as f:
                    records = list(csv.DictReader(f))
                for rec in records:
                    machine, threads = rec.pop("machine"), int(rec.pop("threads"))
                    versions = dict(v.split(" ", 1) for v in rec.pop("versions", "").split("; ") if " " in v)
                    rows.append(Row(**{k: _parse(Row.__dataclass_fields__[k].type, v) for k, v in rec.items()}))
            except OSError as e:
                raise MobileNetError(f"cannot read {path}: {e.strerror}") from None
            except (KeyError, TypeError, ValueError) as e:
                raise MobileNetError(f"{path} is not a CSV written by mobilenet bench ({e})") from None
        peaks: dict[str, list[float]] = {}
        for r in rows:
            peaks.setdefault(r.peak_kind, []).append(r.peak_gflops)
        medians = {k: statistics.median(v) for k, v in peaks.items()}
        return cls(machine, threads, versions, medians.get("fp32", 0.0), rows, medians)

    def json_lines(self) -> str:
        return "\n".join(json.dumps(_rounded(asdict(r))) for r in self.rows)

    def header(self) -> str:
        versions = ", ".join(f"{k} {v}" for k, v in self.versions.items())
        peaks = ", ".join(f"{k} {v:.0f}" for k, v in self.peaks.items()) or f"fp32 {self.gemm_peak_gflops:.0f}"
        return (f"{self.machine}, {self.threads} threads, {versions}; GEMM peaks (GFLOP/s, int8 GOP/s; medians "
                f"over the run): {peaks}. Every backend timed as if alone: blocks of calls per backend, alternated "
                "across rounds with the GEMM references")

    def table(self) -> str:
        head = (f"{'model':<22} {'backend':<17} {'prec':<9} {'batch':>5} {'latency ms':>10} {'±%':>4} "
                f"{'images/s':>9} {'GMAC/s':>7} {'% peak':>6} {'x eager':>7} {'x OV':>5}")
        lines = [self.header(), "", head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{_label(r):<22} {r.backend:<17} {r.precision:<9} {r.batch:>5} {r.latency_ms:>10.2f} "
                         f"{r.spread_pct:>4.0f} {r.images_per_s:>9.1f} {r.gmac_per_s:>7.1f} {r.pct_of_peak:>6.1f} "
                         f"{r.speedup_vs_torch:>7.2f} {_opt(r.vs_openvino, 5)}")
        broken = [r for r in self.rows if r.dw_time_pct is not None]
        if broken:
            head = (f"{'model':<22} {'backend':<11} {'batch':>5} | time % dw/pw/other | MAdds % dw/pw/other | "
                    f"pointwise GMAC/s  mm GMAC/s  pw/mm %")
            lines += ["", "per layer kind (torch.profiler on the backend's own ops; mm: torch.mm on each pointwise "
                          "layer's M x N x K, timed right after each profiled pass)", head, "-" * len(head)]
            for r in broken:
                # A profile that found no pointwise kernel (int8 lowerings have their own names) leaves the
                # pointwise rates empty.
                lines.append(
                    f"{_label(r):<22} {r.backend:<11} {r.batch:>5} | {r.dw_time_pct:5.1f} {r.pw_time_pct:5.1f} "
                    f"{r.other_time_pct:5.1f}  | {r.dw_madds_pct:5.1f} {r.pw_madds_pct:5.1f} {r.other_madds_pct:5.1f}"
                    f"   | {_opt(r.pw_gmac_per_s, 16, 1)} {_opt(r.mm_gmac_per_s, 10, 1)} {_opt(r.pw_pct_of_mm, 8, 1)}")
        notes = sorted({f"{r.backend}: {r.note}" for r in self.rows if r.note})
        return "\n".join(lines + [""] + notes + [""] + self.int8_lines() + self.openvino_lines() + self.skipped_lines())

    def markdown(self) -> str:
        """The README table: ratios first (to torch eager, to OpenVINO's best), then % of the matching peak."""
        lines = [self.header(), "", "| model | batch | backend | precision | ms | ±% | images/s | % of peak | "
                 "× torch eager | × OpenVINO best |", "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            lines.append(f"| {_label(r)} | {r.batch} | {r.backend} | {r.precision} ({r.peak_kind} peak) | "
                         f"{r.latency_ms:.2f} | {r.spread_pct:.0f} | {r.images_per_s:.1f} | {r.pct_of_peak:.1f} | "
                         f"{r.speedup_vs_torch:.2f} | {_opt(r.vs_openvino, 0)} |")
        return "\n".join(lines + [""] + [f"- {line}" for line in self.int8_lines() + self.openvino_lines()
                                          + self.skipped_lines()])

    def skipped_lines(self) -> list[str]:
        return [f"not measured: {why}" for why in self.skipped]

    def int8_lines(self) -> list[str]:
        """One line per runtime, model and batch: int8 speed over the same runtime's fp32."""
        by_key = {(r.model, r.alpha, r.resolution, r.batch, r.backend): r for r in self.rows}
        lines = []
        for (model, alpha, res, batch, backend), r in by_key.items():
            fp32 = "torch-fast" if backend == "torch-int8" else backend.removesuffix("-int8")  # compiled, like int8
            base = by_key.get((model, alpha, res, batch, fp32))
            if backend.endswith("-int8") and base is not None:
                lines.append(f"{backend} vs its fp32, {model} a{alpha:g} r{res} batch {batch}: "
                             f"x{base.latency_ms / r.latency_ms:.2f}")
        return lines


    def openvino_lines(self) -> list[str]:
        """Per model and batch: the fastest backend that is not OpenVINO against OpenVINO's fastest."""
        groups: dict[tuple, list[Row]] = {}
        for r in self.rows:
            groups.setdefault((_label(r), r.batch), []).append(r)
        lines = []
        for (label, batch), rows in groups.items():
            ours = [r for r in rows if not r.backend.startswith(("openvino", "auto"))]
            theirs = [r for r in rows if r.backend.startswith("openvino")]
            if ours and theirs:
                best, ov = min(ours, key=lambda r: r.latency_ms), min(theirs, key=lambda r: r.latency_ms)
                lines.append(f"best without OpenVINO, {label} batch {batch}: {best.backend} ({best.precision}) "
                             f"x{ov.latency_ms / best.latency_ms:.2f} OpenVINO's best ({ov.backend}, {ov.precision})")
        return lines


def _opt(value: float | None, width: int, digits: int = 2) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def _label(r: Row) -> str:
    return f"{r.model} a{r.alpha:g} r{r.resolution}"


def _parse(kind: str, text: str):
    """A CSV cell back to its field's type (annotations are strings here: ``from __future__ import annotations``)."""
    if kind.endswith("| None") and text == "":
        return None
    kind = kind.removesuffix(" | None")
    return int(text) if kind == "int" else float(text) if kind == "float" else text


def _rounded(d: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}
