"""Prometheus metrics, one registry per app (no process globals): latency per route and per
stage, jobs in flight (queue depth), rejected jobs, index size."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE", "Metrics", "MetricsMiddleware"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_seconds = Histogram(
            "pemt_request_seconds",
            "HTTP request latency",
            ["route", "method", "status"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "pemt_stage_seconds", "time per pipeline stage", ["stage"], buckets=_BUCKETS, registry=r
        )
        self.jobs_in_flight = Gauge("pemt_jobs_in_flight", "media jobs running now", registry=r)
        self.jobs_waiting = Gauge(
            "pemt_jobs_waiting", "media jobs queued for a slot (queue depth)", registry=r
        )
        self.jobs_rejected = Counter(
            "pemt_jobs_rejected_total", "jobs answered 429 (saturated)", registry=r
        )
        self.index_size = Gauge("pemt_index_items", "items in the vector index", registry=r)
        self.windows = Counter(
            "pemt_windows_embedded_total", "windows run through the model", registry=r
        )
        self.media_errors = Counter(
            "pemt_media_errors_total", "rejected uploads", ["code"], registry=r
        )

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)

    def render(self, index_size: Callable[[], int] | None = None) -> bytes:
        if index_size is not None:
            with contextlib.suppress(Exception):
                self.index_size.set(index_size())
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI: times every HTTP request, labelled by the matched route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.request_seconds.labels(
                path, scope.get("method", ""), str(status["code"])
            ).observe(time.perf_counter() - t0)
