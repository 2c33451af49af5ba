"""Prometheus metrics of one app instance, in its own registry (so that test apps never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))


class Metrics:
    """The service's counters, gauges and histograms.

    Labels stay low-cardinality: ``endpoint`` is the route template (``/v1/shipments/{shipment_id}``),
    never the raw path, and ``unmatched`` for paths no route knows.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "clearsight_http_requests_total",
            "HTTP requests by endpoint, method and status.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "clearsight_http_request_duration_seconds",
            "Request latency by endpoint, method and status (a read and an upload of one path apart).",
            ["endpoint", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "clearsight_batch_size",
            "Images per predictor call, by cargo type.",
            ["cargo_type"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "clearsight_queue_depth",
            "Images waiting to be scored, by cargo type.",
            ["cargo_type"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "clearsight_decisions_total",
            "Shipment decisions recorded, by tier.",
            ["tier"],
            registry=self.registry,
        )
        self.scores = Histogram(
            "clearsight_image_score",
            "Image anomaly scores, by cargo type.",
            ["cargo_type"],
            buckets=_SCORE_BUCKETS,
            registry=self.registry,
        )

    def observe_batch(self, cargo_type: str, size: int, depth: int) -> None:
        """Batcher callback (runs on the worker thread; prometheus_client is thread-safe).

        The queue depth gauge reads the batcher live (``set_function``), so ``depth`` is not stored.
        """
        self.batch_size.labels(cargo_type).observe(size)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
