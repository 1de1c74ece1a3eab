"""Deployment: BN folding, ONNX export with a parity check, runtime backends (PyTorch, ONNX Runtime, OpenVINO;
fp32, bf16, int8; ``auto``) and int8 quantization."""

from .backends import BACKENDS, CONCRETE, Runner, available_backends, make_runner
from .export import ExportResult, check_matches, export_onnx, read_info
from .fold import count_batch_norms, fold_bn
from .quantize import quantize_onnx
from .source import ModelInfo, load_model, model_info

__all__ = [
    "BACKENDS", "CONCRETE", "ExportResult", "ModelInfo", "Runner", "check_matches", "count_batch_norms", "export_onnx",
    "fold_bn", "load_model", "make_runner", "model_info", "quantize_onnx", "read_info",
    "available_backends",
]
