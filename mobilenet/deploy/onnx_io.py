"""The names every exported graph uses and the ONNX Runtime session every backend opens: a leaf module, so that
export, quantization and the backends all depend on it and not on each other."""

from __future__ import annotations

import torch

from ..errors import MobileNetError

INPUT_NAME, OUTPUT_NAME = "input", "logits"


def ort_session(path: str | bytes, threads: int | None = None):
    """An ONNX Runtime CPU session with full graph optimisation and ``threads`` intra-op threads, for an ONNX file
    or a serialised model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        where = repr(path) if isinstance(path, str) else "the model"
        raise MobileNetError(f"ONNX Runtime cannot load {where}: {str(e).splitlines()[0]}") from None
