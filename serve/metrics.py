"""Prometheus metrics of one server (its own registry, so several apps in one process do not collide).

    ganrt_requests_total{protocol}        requests answered, by protocol (v1, v2)
    ganrt_images_total                    images generated
    ganrt_errors_total{status}            error answers, by HTTP status
    ganrt_queue_depth                     requests waiting for a batch
    ganrt_queue_images                    images waiting for a batch
    ganrt_images_dropped_total{reason}    images never computed: rejected (queue full), expired (deadline),
                                          cancelled (the client went away), failed (another part of the
                                          request failed)
    ganrt_images_wasted_total{reason}     images computed for a request that had gone while its batch ran:
                                          cancelled (the client), expired (the deadline), failed
    ganrt_backend_failures                consecutive failed batches (0 after a success)
    ganrt_batch_images                    histogram of the images in each formed batch
    ganrt_queue_wait_seconds              histogram: arrival to batch start, per request part
    ganrt_compute_seconds                 histogram: one batch's generate call
    ganrt_encode_seconds                  histogram: encoding one response (npy, PNG, zip, JSON)
    ganrt_request_seconds{protocol}       histogram: a whole request, body read to response ready
"""

from __future__ import annotations

import time

from ganrt.serve.batcher import Stats

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, max_batch: int) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ganrt_requests", "Requests answered", ["protocol"], registry=r)
        self.images = Counter("ganrt_images", "Images generated", registry=r)
        self.errors = Counter("ganrt_errors", "Error answers by HTTP status", ["status"], registry=r)
        self.queue_depth = Gauge("ganrt_queue_depth", "Requests waiting for a batch", registry=r)
        self.queue_images = Gauge("ganrt_queue_images", "Images waiting for a batch", registry=r)
        self.dropped = Counter("ganrt_images_dropped", "Images never computed, by reason", ["reason"], registry=r)
        for reason in ("rejected", "expired", "cancelled", "failed"):
            self.dropped.labels(reason)  # every series present from the start (rates need the zero)
        self.wasted = Counter("ganrt_images_wasted", "Images computed for a request that had gone, by reason",
                              ["reason"], registry=r)
        for reason in ("expired", "cancelled", "failed"):
            self.wasted.labels(reason)
        self.backend_failures = Gauge("ganrt_backend_failures", "Consecutive failed batches", registry=r)
        buckets = sorted({1, *(2**k for k in range(16) if 2**k < max_batch), max_batch})
        self.batch_images = Histogram("ganrt_batch_images", "Images in each formed batch", buckets=buckets,
                                      registry=r)
        self.queue_wait = Histogram("ganrt_queue_wait_seconds", "Arrival to batch start", buckets=LATENCY_BUCKETS,
                                    registry=r)
        self.compute = Histogram("ganrt_compute_seconds", "One batch's generate call", buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.encode = Histogram("ganrt_encode_seconds", "Encoding one response", buckets=LATENCY_BUCKETS, registry=r)
        self.request = Histogram("ganrt_request_seconds", "A whole request", ["protocol"], buckets=LATENCY_BUCKETS,
                                 registry=r)

    def answered(self, protocol: str, images: int, *, started: float, encoding_started: float) -> None:
        """A request answered: its images, its encoding time and its whole time (perf_counter stamps)."""
        now = time.perf_counter()
        self.encode.observe(now - encoding_started)
        self.requests.labels(protocol).inc()
        self.images.inc(images)
        self.request.labels(protocol).observe(now - started)

    def batcher_stats(self) -> Stats:
        return Stats(on_batch=self.batch_images.observe, on_queue_wait=self.queue_wait.observe,
                     on_compute=self.compute.observe, on_depth=self.queue_depth.set,
                     on_images_waiting=self.queue_images.set,
                     on_dropped=lambda reason, n: self.dropped.labels(reason).inc(n),
                     on_wasted=lambda reason, n: self.wasted.labels(reason).inc(n))

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def batch_sizes(text: str) -> dict[str, float]:
    """{upper bound: cumulative count} of ganrt_batch_images from a /metrics exposition (for the load tester)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        if family.name == "ganrt_batch_images":
            return {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    return {}
