"""The server's counters and histograms, rendered in the Prometheus text format (version 0.0.4)
for `GET /metrics`. Each worker process keeps its own."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Cumulative buckets, a sum and a count, as Prometheus reads them."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def lines(self, name: str, labels: str = "") -> list[str]:
        joined = f"{labels}," if labels else ""
        lines, running = [], 0
        for bound, count in zip([*self.bounds, "+Inf"], self.counts, strict=True):
            running += count
            lines.append(f'{name}_bucket{{{joined}le="{bound}"}} {running}')
        braces = f"{{{labels}}}" if labels else ""
        lines += [f"{name}_sum{braces} {self.total:.6f}", f"{name}_count{braces} {running}"]
        return lines


class Metrics:
    """What the app records: requests by route and status, their latency, images scored or
    rejected, and the batcher's batch sizes and model time. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.errors: Counter[tuple[str, int]] = Counter()
        self.images: Counter[str] = Counter()
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)
        self.in_flight = 0

    def request_started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def request_finished(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.requests[route, status] += 1
            if status >= 400:
                self.errors[route, status] += 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def images_done(self, outcome: str, count: int = 1) -> None:
        with self._lock:
            self.images[outcome] += count

    def batch_done(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batch_size.observe(size)
            self.batch_seconds.observe(seconds)

    def render(self, queued_images: int) -> str:
        """The exposition text; `queued_images` is read from the batcher at scrape time."""
        with self._lock:
            out = [
                "# HELP fakedet_requests_total HTTP requests answered, by route and status.",
                "# TYPE fakedet_requests_total counter",
            ]
            for (route, status), count in sorted(self.requests.items()):
                out.append(f'fakedet_requests_total{{route="{route}",status="{status}"}} {count}')
            out += [
                "# HELP fakedet_request_errors_total Requests answered with a 4xx or 5xx status.",
                "# TYPE fakedet_request_errors_total counter",
            ]
            for (route, status), count in sorted(self.errors.items()):
                out.append(
                    f'fakedet_request_errors_total{{route="{route}",status="{status}"}} {count}'
                )
            out += [
                "# HELP fakedet_request_duration_seconds Time from request to response.",
                "# TYPE fakedet_request_duration_seconds histogram",
            ]
            for route, histogram in sorted(self.latency.items()):
                out += histogram.lines("fakedet_request_duration_seconds", f'route="{route}"')
            out += [
                "# HELP fakedet_images_total Uploaded images, scored or rejected.",
                "# TYPE fakedet_images_total counter",
            ]
            for outcome in ("scored", "rejected"):
                out.append(f'fakedet_images_total{{outcome="{outcome}"}} {self.images[outcome]}')
            out += [
                "# HELP fakedet_batch_size Images per model call (a heatmap is a call of one).",
                "# TYPE fakedet_batch_size histogram",
                *self.batch_size.lines("fakedet_batch_size"),
                "# HELP fakedet_batch_duration_seconds Model time per batch.",
                "# TYPE fakedet_batch_duration_seconds histogram",
                *self.batch_seconds.lines("fakedet_batch_duration_seconds"),
                "# HELP fakedet_requests_in_flight Requests being answered now.",
                "# TYPE fakedet_requests_in_flight gauge",
                f"fakedet_requests_in_flight {self.in_flight}",
                "# HELP fakedet_queued_images Images waiting for the model.",
                "# TYPE fakedet_queued_images gauge",
                f"fakedet_queued_images {queued_images}",
            ]
        return "\n".join(out) + "\n"
