"""Counters and histograms for ``GET /metrics`` in the Prometheus text format (version 0.0.4)."""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)  # images per model call


class Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {n}' for bound, n in zip(self.buckets, self.counts)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        braces = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{braces} {self.sum:.6f}", f"{name}_count{braces} {self.count}"]
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)
        self.images_predicted = 0

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batch_size.observe(size)
            self.batch_seconds.observe(seconds)
            self.images_predicted += size

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP pixelmine_http_requests_total HTTP requests by method, route and status.",
                     "# TYPE pixelmine_http_requests_total counter"]
            for (method, route, status), n in sorted(self.requests.items()):
                lines.append(f'pixelmine_http_requests_total{{method="{method}",route="{_escape(route)}",'
                             f'status="{status}"}} {n}')
            lines += ["# HELP pixelmine_http_request_duration_seconds Time to answer a request.",
                      "# TYPE pixelmine_http_request_duration_seconds histogram"]
            for route, histogram in sorted(self.latency.items()):
                lines += histogram.lines("pixelmine_http_request_duration_seconds", f'route="{_escape(route)}"')
            lines += ["# HELP pixelmine_predict_batch_size Images per model call (micro-batching).",
                      "# TYPE pixelmine_predict_batch_size histogram",
                      *self.batch_size.lines("pixelmine_predict_batch_size"),
                      "# HELP pixelmine_predict_batch_seconds Time of one model call.",
                      "# TYPE pixelmine_predict_batch_seconds histogram",
                      *self.batch_seconds.lines("pixelmine_predict_batch_seconds"),
                      "# HELP pixelmine_predicted_images_total Images predicted since start.",
                      "# TYPE pixelmine_predicted_images_total counter",
                      f"pixelmine_predicted_images_total {self.images_predicted}"]
        return "\n".join(lines) + "\n"
