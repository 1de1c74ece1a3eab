"""Prometheus metrics of one server, in a registry of its own (so several servers can live in one process).

* ``mobilenet_requests_total{endpoint, status}``: HTTP requests answered, by route and status code;
* ``mobilenet_request_latency_seconds``: infer requests, from the body read to the response built;
* ``mobilenet_batch_size``: images per model call; its ``_sum / _count`` is the mean batch size;
* ``mobilenet_batch_seconds``: time per model call;
* ``mobilenet_queue_depth``: requests waiting for a batch;
* ``mobilenet_requests_in_flight``: infer requests read and not yet answered (waiting, decoding or running).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """The server's counters, histograms and gauges, and their text exposition."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model: str):
        self.registry = CollectorRegistry()
        self.requests = Counter("mobilenet_requests", "HTTP requests answered, by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("mobilenet_request_latency_seconds", "infer request latency in the server",
                                 ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry).labels(model)
        self.batch_size = Histogram("mobilenet_batch_size", "images per model call", ["model"],
                                    buckets=_BATCH_BUCKETS, registry=self.registry).labels(model)
        self.batch_seconds = Histogram("mobilenet_batch_seconds", "seconds per model call", ["model"],
                                       buckets=_LATENCY_BUCKETS, registry=self.registry).labels(model)
        self.queue_depth = Gauge("mobilenet_queue_depth", "requests waiting for a batch", ["model"],
                                 registry=self.registry).labels(model)
        self.in_flight = Gauge("mobilenet_requests_in_flight", "infer requests read and not yet answered",
                               ["model"], registry=self.registry).labels(model)

    def observe_batch(self, images: int, seconds: float) -> None:
        self.batch_size.observe(images)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
