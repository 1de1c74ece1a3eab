"""The benchmark harness: every backend timed as if alone, against this machine's GEMM peaks and OpenVINO's best."""

from .harness import DEFAULT_MODELS, measure_alone, run_bench
from .peaks import gemm_peak
from .report import Report, Row

__all__ = ["DEFAULT_MODELS", "Report", "Row", "gemm_peak", "measure_alone", "run_bench"]
