"""``mobilenet serve``: a model behind the Open Inference Protocol (KServe v2 REST), with dynamic batching.

* :mod:`~mobilenet.serve.protocol`: request parsing and response encoding (JSON, binary tensors, encoded images,
  the classification extension);
* :mod:`~mobilenet.serve.batcher`: the dynamic batcher;
* :mod:`~mobilenet.serve.metrics`: Prometheus metrics;
* :mod:`~mobilenet.serve.app`: the Starlette application and the uvicorn server;
* :mod:`~mobilenet.serve.load`: the closed-loop load client and ``bench-serve``.

The server needs the ``serve`` extra (``pip install 'mobilenet[serve]'``): Starlette, uvicorn, prometheus_client, and
httptools and uvloop, which uvicorn uses when present (about 0.15 ms less per request than its pure-Python parser and
asyncio's loop).
"""

from __future__ import annotations

import importlib.util

from ..errors import MobileNetError

REQUIRED = ("starlette", "uvicorn", "prometheus_client")


def require() -> None:
    """Raises :class:`~mobilenet.errors.MobileNetError` naming the extra if a server library is missing."""
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        raise MobileNetError(f"serving needs {', '.join(missing)}: pip install 'mobilenet[serve]'")
