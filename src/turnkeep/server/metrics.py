"""The gateway's Prometheus metrics, in a registry of its own (so several apps in one process never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from turnkeep.server.accounting import Billed

__all__ = ["Metrics"]


class Metrics:
    """Requests and their latency by route and status; upstream tokens and USD by tenant and model."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "turnkeep_gateway_requests", "Requests answered", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "turnkeep_gateway_request_seconds",
            "Time to answer a request (to the last byte of a stream)",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.tokens = Counter(
            "turnkeep_gateway_upstream_tokens",
            "Tokens billed upstream (kind: input = whole prompt, cache_read, cache_write, output)",
            ["tenant", "model", "kind"],
            registry=self.registry,
        )
        self.usd = Counter(
            "turnkeep_gateway_upstream_usd", "USD billed upstream", ["tenant", "model"], registry=self.registry
        )
        self.cache_read_share = Gauge(
            "turnkeep_gateway_cache_read_share",
            "Share of prompt tokens read from the cache, over everything this process sent",
            ["tenant", "model"],
            registry=self.registry,
        )
        self._prompt: dict[tuple[str, str], tuple[int, int]] = {}  # (tenant, model) → (cache read, prompt) tokens

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def bill(self, tenant: str, billed: Billed) -> None:
        for kind, count in (
            ("input", billed.input_tokens),
            ("cache_read", billed.cache_read_tokens),
            ("cache_write", billed.cache_write_tokens),
            ("output", billed.output_tokens),
        ):
            self.tokens.labels(tenant, billed.model, kind).inc(count)
        self.usd.labels(tenant, billed.model).inc(float(billed.usd))
        read, total = self._prompt.get((tenant, billed.model), (0, 0))
        read, total = read + billed.cache_read_tokens, total + billed.input_tokens
        self._prompt[(tenant, billed.model)] = (read, total)
        self.cache_read_share.labels(tenant, billed.model).set(read / total if total else 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
