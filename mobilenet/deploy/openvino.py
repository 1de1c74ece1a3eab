"""OpenVINO backends: the exported ONNX graph compiled by OpenVINO's CPU plugin, at fp32, bf16 or int8.

* ``openvino``: float32 everywhere (the inference-precision hint pinned to f32), so it matches PyTorch to 1e-4.
* ``openvino-bf16``: OpenVINO's own default on CPUs with bf16 instructions (AVX512-BF16, AMX): convolutions and
  matmuls in bf16. On a CPU without them the plugin runs f32, and the runner's ``precision`` says so.
* ``openvino-int8``: post-training quantization with NNCF on calibration images (the ``MIXED`` preset: symmetric
  per-channel weights, asymmetric activations with min/max ranges, as for ONNX Runtime). The layers NNCF leaves in
  float run at bf16 where the CPU has it (``precision`` ``int8+bf16``), else f32.

OpenVINO reads the same ONNX file as ONNX Runtime (``openvino.Core.read_model``), so every backend runs the one
exported, BN-folded graph that ``mobilenet export`` proved equal to PyTorch.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import MobileNetError

# The inference-precision hint per backend. For int8 it governs the layers NNCF leaves in float: bf16 where the CPU
# has it, as OpenVINO does by default (measured 1.2-1.6x faster than f32 for them on V2 and V3-Large, AVX512-BF16).
PRECISIONS = {"openvino": "f32", "openvino-bf16": "bf16", "openvino-int8": "bf16"}
MAX_SHAPES = 8  # compiled input shapes kept per runner


def _core():
    try:
        import openvino as ov
    except ImportError:
        raise MobileNetError("the OpenVINO backends need the openvino package: pip install 'mobilenet[openvino]'") \
            from None
    return ov.Core()


def quantize_openvino(ov_model, calib: np.ndarray):
    """An int8 copy of the OpenVINO model ``ov_model``, calibrated with NNCF on ``calib`` (N, C, H, W)."""
    try:
        import nncf
    except ImportError:
        raise MobileNetError("openvino-int8 needs the nncf package: pip install 'mobilenet[openvino]'") from None
    import contextlib
    import io
    import logging

    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    logging.getLogger("nncf").setLevel(logging.ERROR)
    items = [calib[i:i + 1] for i in range(len(calib))]
    # NNCF draws progress bars on stdout (rich), which would land in the middle of a command's tables or JSON.
    # Activation ranges from the plain min/max over the calibration images, as for ONNX Runtime: NNCF's default
    # (averaged per-image extremes) clips MobileNet's activations; on a trained V1 α 0.25 it cost 6.9 points of
    # top-1 (65 % agreement with fp32), min/max 0.1 points (95.5 %).
    advanced = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    with contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(ov_model, nncf.Dataset(items), preset=nncf.QuantizationPreset.MIXED,
                             subset_size=len(items), advanced_parameters=advanced)


def compile_openvino(onnx_path: str, backend: str, threads: int, calib: np.ndarray | None = None):
    """``(run, precision, note)`` for ``backend`` on the ONNX file ``onnx_path``.

    ``run`` maps a float32 (B, C, H, W) array to logits; ``precision`` is what the compiled model reports it ran
    (``f32``, ``bf16``, ``int8`` plus the float precision of the rest).
    """
    core = _core()
    import openvino.properties as props
    import openvino.properties.hint as hints

    model = core.read_model(onnx_path)
    note = "OpenVINO"
    if backend == "openvino-int8":
        if calib is None:
            raise MobileNetError("openvino-int8 needs calibration images")
        model = quantize_openvino(model, calib)
        note = f"OpenVINO, int8 (NNCF, MIXED preset) calibrated on {len(calib)} images"
    config = {
        hints.inference_precision: PRECISIONS[backend],
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        props.inference_num_threads: threads,
        props.num_streams: 1,  # one request at a time, like every other backend
    }
    # One compiled model per input shape, each with a static batch size: OpenVINO's int8+bf16 kernels on an AMX
    # CPU crashed the process (segmentation fault) when one compiled model with a dynamic batch axis was called
    # with batch 2 and then batch 1, and a static shape is what OpenVINO optimises best anyway.
    requests: dict[tuple[int, ...], object] = {}

    def request_for(shape: tuple[int, ...]):
        if shape not in requests:
            if len(requests) >= MAX_SHAPES:  # the oldest goes: a server's batch sizes are bounded, a loop's few
                del requests[next(iter(requests))]
            model.reshape({model.input(0): shape})
            try:
                compiled = core.compile_model(model, "CPU", config)
            except Exception as e:
                raise MobileNetError(f"OpenVINO cannot compile {onnx_path!r}: {str(e).splitlines()[0]}") from None
            requests[shape] = compiled.create_infer_request()
        return requests[shape]

    first = model.input(0).get_partial_shape()
    shape = (1, *(d.get_length() if d.is_static else 1 for d in list(first)[1:]))
    ran = str(request_for(shape).get_compiled_model().get_property(hints.inference_precision))
    ran = {"<Type: 'float32'>": "fp32", "<Type: 'bfloat16'>": "bf16"}.get(ran, ran.strip("<>"))
    precision = f"int8+{ran}" if backend == "openvino-int8" else ran

    def run(images) -> torch.Tensor:
        x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
        x = np.ascontiguousarray(x, dtype=np.float32)
        request = request_for(tuple(x.shape))
        request.infer({0: x})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    return run, precision, f"{note}, {precision}"
