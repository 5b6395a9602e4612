"""Prometheus metrics, on a registry per app (so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Decisions by kind and reason, latency, and what is being served."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "fastrefund_decisions",
            "Decisions made (replays not counted), by decision.",
            ["decision"],
            registry=self.registry,
        )
        self.reasons = Counter(
            "fastrefund_decision_reasons",
            "Failed rules behind manual_review decisions, by reason code.",
            ["reason"],
            registry=self.registry,
        )
        self.replays = Counter(
            "fastrefund_decision_replays", "Idempotent replays answered.", registry=self.registry
        )
        self.conflicts = Counter(
            "fastrefund_decision_conflicts",
            "Requests refused with 409: another request already used the refund_id.",
            registry=self.registry,
        )
        self.refused = Counter(
            "fastrefund_refused_requests",
            "Decision requests (single and batch routes) answered without a decision, by "
            "route and status: 401/403 (token), 409 (refund_id reused), 413, 422 (body), 503.",
            ["route", "status"],
            registry=self.registry,
        )
        self.unavailable = Counter(
            "fastrefund_unavailable",
            "Failures of a dependency, by component (audit, store, model, scoring).",
            ["component"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fastrefund_decision_seconds",
            "Time to decide and audit, in process, by route (single: from the parsed request "
            "to its committed answer, its group's wait included; batch: the whole batch).",
            ["route"],
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        # The hot path's series, labelled once (`labels()` costs a lock and a lookup a call).
        self.single_latency = self.latency.labels(route="single")
        self.group_size = Histogram(
            "fastrefund_decisions_per_transaction",
            "Decisions committed in one audit transaction, by route: single requests that "
            "arrive together are decided together (serving.coalesce).",
            ["route"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
            registry=self.registry,
        )
        self.model = Gauge(
            "fastrefund_model_info",
            "The model version being served (value 1; no series when none is loaded).",
            ["name", "version"],
            registry=self.registry,
        )
        self.policy = Gauge(
            "fastrefund_policy_info",
            "The policy version in force.",
            ["version"],
            registry=self.registry,
        )

    def serving_model(self, name: str, version: str | None) -> None:
        """Show exactly one model version (or none)."""
        self.model.clear()
        if version is not None:
            self.model.labels(name=name, version=version).set(1)
