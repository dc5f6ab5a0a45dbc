"""Prometheus metrics. One `Metrics` per process, built by bootstrap code on its own registry."""

from __future__ import annotations

import bisect
import urllib.request
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

# No `_created` series: they would be exposed as families of their own, which cannot be merged
# with the same families scraped from worker processes (see `Gathered`).
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Every metric memberflow exposes; names are documented in deploy/README.md."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # What /metrics serves: this registry, or one gathering worker processes' metrics too.
        self.exposed = self.registry
        r = self.registry
        self.events_processed = Counter(
            "memberflow_events_processed_total",
            "Inbound events applied to state, by worker and event type", ["worker", "type"],
            registry=r)
        self.events_duplicate = Counter(
            "memberflow_events_duplicate_total",
            "Events skipped because their id (or order) was already applied", ["worker"],
            registry=r)
        self.events_rejected = Counter(
            "memberflow_events_rejected_total",
            "Inputs parked as dead letters (refused by the contract, conflicting, too late, or "
            "failing to apply), by stage and first field",
            ["stage", "field"], registry=r)
        self.ingest_accepted = Counter(
            "memberflow_ingest_accepted_total", "Events accepted and produced by ingest",
            ["source", "type"], registry=r)
        self.batch_seconds = Histogram(
            "memberflow_batch_seconds",
            "Time to apply one poll batch (decode, database transaction, publish)", ["worker"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.tick_seconds = Histogram(
            "memberflow_timed_work_seconds",
            "Time of one round of timed work (customer ABC recomputes, outbox relay)", ["worker"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.timed_work_failures = Counter(
            "memberflow_timed_work_failures_total",
            "Rounds of timed work that failed with an error other than a transient one",
            ["worker"], registry=r)
        self.batch_size = Histogram(
            "memberflow_batch_events", "Events per applied batch", ["worker"],
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000), registry=r)
        self.event_lag_seconds = Histogram(
            "memberflow_event_age_seconds",
            "From the broker timestamp of an event to its state being committed (every event "
            "applied)", ["worker"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge(
            "memberflow_consumer_lag", "Messages behind the partition's end",
            ["worker", "topic", "partition"], registry=r)
        self.db_retries = Counter(
            "memberflow_db_retries_total",
            "Batches retried after a transient database or broker error",
            ["worker"], registry=r)
        self.outputs_published = Counter(
            "memberflow_outputs_published_total", "Member events published, by type",
            ["worker", "type"], registry=r)
        self.archived = Counter(
            "memberflow_archived_events_total", "Events appended to the durable archive",
            registry=r)


def observe_all(histogram: Histogram, values: Sequence[float]) -> None:
    """Observe many values at once, exactly as one `observe` each would: one lock per bucket
    instead of one per value (a batch holds thousands of events)."""
    if not values:
        return
    bounds = histogram._upper_bounds  # this child's bucket bounds, +Inf last
    for index, n in Tally(bisect.bisect_left(bounds, v) for v in values).items():
        histogram._buckets[index].inc(n)
    histogram._sum.inc(sum(values))


class Gathered(Collector):
    """This process's metrics and those of the worker processes it started, as one set: one
    scrape target for Prometheus however the workers are laid out. Each family holds the
    samples of every process (they differ by their `worker` label)."""

    def __init__(self, own: CollectorRegistry, sources: Callable[[], list[str]],
                 timeout_s: float = 2.0) -> None:
        self.own = own
        self.sources = sources
        self.timeout_s = timeout_s

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {f.name: f for f in self.own.collect()}
        for url in self.sources():
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                    text = resp.read().decode()
            except OSError:
                continue  # a worker that does not answer now is missing from this scrape
            for family in text_string_to_metric_families(text):
                known = families.get(family.name)
                if known is None:
                    families[family.name] = family
                else:
                    known.samples.extend(family.samples)
        return list(families.values())


def gathered(metrics: Metrics, sources: Callable[[], list[str]]) -> None:
    """Make `metrics` serve its own and the worker processes' metrics together."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Gathered(metrics.registry, sources))
    metrics.exposed = registry
