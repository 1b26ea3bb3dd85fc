"""`GET /metrics`: the server's state in Prometheus' text exposition format, read when it is scraped.

One custom collector reads what the server already knows at scrape time (the store's live sandboxes, the node's
metrics history, pools, counts and egress audit, the build service's timings) instead of metric objects updated
all over the code. Each app has its own `CollectorRegistry`, so several servers (or tests) in one process do not
share or clash over the global one.

The store is read on a worker thread before the families are built (`Prometheus.render`); everything else is
in-memory state of the event loop, read on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ..node.telemetry import Histogram
from ..store import SandboxRecord
from .sandboxes import SandboxService

CONTENT_TYPE = CONTENT_TYPE_LATEST
STATES = ("running", "paused")  # what `sandhive_sandboxes` counts (killed sandboxes are gone)


@dataclass
class _Scrape:
    """What one scrape read from the store."""

    records: list[SandboxRecord] = field(default_factory=list)


class SandhiveCollector(Collector):
    def __init__(self, service: SandboxService, build_seconds: Histogram | None) -> None:
        self.service = service
        self.build_seconds = build_seconds
        self.scrape = _Scrape()
        # Every (state, backend, template, node) ever reported, so that a kind that went away reads 0 rather than
        # vanishing (a scraper then sees the drop instead of a stale last value).
        self._seen: set[tuple[str, str, str, str]] = set()

    async def refresh(self) -> None:
        records = await asyncio.to_thread(self.service.store.live_sandboxes)
        self.scrape = _Scrape(records)

    def collect(self) -> Iterable[Metric]:
        yield self._sandboxes()
        yield from self._create_seconds()
        yield from self._usage()
        yield self._pools()
        yield self._rejections()
        yield self._build_seconds()
        yield self._egress_denied()
        yield from self._sampler()

    # ---- sandboxes ------------------------------------------------------------------------------------------
    def _sandboxes(self) -> Metric:
        family = GaugeMetricFamily("sandhive_sandboxes", "Sandboxes this server holds, by state",
                                   labels=["state", "backend", "template", "node"])
        counts: dict[tuple[str, str, str, str], int] = {}
        for r in self.scrape.records:
            if r.state in STATES:
                key = (r.state, r.backend, r.template_id, r.client_id)
                counts[key] = counts.get(key, 0) + 1
        self._seen |= set(counts)
        for key in sorted(self._seen):
            family.add_metric(list(key), counts.get(key, 0))
        return family

    def _create_seconds(self) -> Iterator[Metric]:
        family = HistogramMetricFamily("sandhive_sandbox_create", "Seconds a sandbox create took on the node, "
                                       "by whether a warm pool served it", labels=["pool"], unit="seconds")
        node = self.service.node
        hists = node.telemetry.create_seconds if node is not None else {"hit": None, "miss": None}
        for pool, hist in hists.items():
            _add_histogram(family, [pool], hist)
        yield family

    def _usage(self) -> Iterator[Metric]:
        labels = ["sandbox", "team", "template"]
        cpu = CounterMetricFamily("sandhive_sandbox_cpu_seconds", "CPU time a running sandbox used",
                                  labels=labels)
        memory = GaugeMetricFamily("sandhive_sandbox_memory_bytes", "Memory a running sandbox uses (without its "
                                   "page cache), at the last sample", labels=labels)
        disk = GaugeMetricFamily("sandhive_sandbox_disk_bytes", "Bytes of its disk a running sandbox uses, at the "
                                 "last sample", labels=labels)
        node = self.service.node
        if node is not None:
            by_id = {r.sandbox_id: r for r in self.scrape.records}
            for sandbox_id in node.history.tracked():
                sample, record = node.history.latest(sandbox_id), by_id.get(sandbox_id)
                if sample is None or record is None:
                    continue
                values = [sandbox_id, record.team_id, record.template_id]
                cpu.add_metric(values, sample.usage.cpu_seconds)
                memory.add_metric(values, sample.usage.mem_used)
                disk.add_metric(values, sample.usage.disk_used)
        yield from (cpu, memory, disk)

    # ---- node and server --------------------------------------------------------------------------------------
    def _pools(self) -> Metric:
        family = GaugeMetricFamily("sandhive_pool_ready", "Warm sandboxes ready to be handed out",
                                   labels=["template", "backend"])
        node = self.service.node
        if node is not None:
            for pool in node.pools.status() + node.shells.status():
                family.add_metric([pool.template_id, pool.backend], pool.ready)
        return family

    def _rejections(self) -> Metric:
        family = CounterMetricFamily("sandhive_admission_rejections", "Requests admission refused: creates the "
                                     "host had no room for (host_full, 503) and the team quotas' 429s (their "
                                     "error codes)", labels=["reason"])
        node = self.service.node
        counts = {"host_full": node.telemetry.rejections["host_full"] if node is not None else 0}
        for quota in (self.service.quota, self.service.pauses.quota):
            counts[quota.error_code] = counts.get(quota.error_code, 0) + quota.rejected
        for reason, n in sorted(counts.items()):
            family.add_metric([reason], n)
        return family

    def _build_seconds(self) -> Metric:
        family = HistogramMetricFamily("sandhive_template_build", "Seconds template builds ran (ready or failed)",
                                       labels=[], unit="seconds")
        _add_histogram(family, [], self.build_seconds)
        return family

    def _egress_denied(self) -> Metric:
        family = CounterMetricFamily("sandhive_egress_denied", "Connections sandboxes tried that egress rules "
                                     "denied, since the server started")
        node = self.service.node
        family.add_metric([], node.egress_log.denied_total if node is not None else 0)
        return family

    def _sampler(self) -> Iterator[Metric]:
        node = self.service.node
        if node is None:
            return
        family = GaugeMetricFamily("sandhive_metrics_sample_seconds", "Wall time of the node's last round of "
                                   "sandbox metrics sampling")
        family.add_metric([], node.history.last_round_seconds)
        yield family
        family = GaugeMetricFamily("sandhive_metrics_sample_cpu_seconds", "CPU time the server used during the "
                                   "node's last round of sandbox metrics sampling (an upper bound of the round's)")
        family.add_metric([], node.history.last_round_cpu_seconds)
        yield family
        family = GaugeMetricFamily("sandhive_metrics_sampled_sandboxes", "Sandboxes the node samples each round")
        family.add_metric([], len(node.history.tracked()))
        yield family


def _add_histogram(family: HistogramMetricFamily, labels: list[str], hist: Histogram | None) -> None:
    if hist is None:
        family.add_metric(labels, [("+Inf", 0)], 0.0)
    else:
        family.add_metric(labels, [(le, float(n)) for le, n in hist.cumulative()], hist.total)


class Prometheus:
    """The app's registry and its one collector."""

    def __init__(self, service: SandboxService, build_seconds: Histogram | None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = SandhiveCollector(service, build_seconds)
        self.registry.register(self.collector)

    async def render(self) -> bytes:
        await self.collector.refresh()
        return generate_latest(self.registry)
