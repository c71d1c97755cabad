"""The engine of ``tensorgate top``: scrape, compare two scrapes, render one frame.

Each poll reads every worker's Prometheus ``/metrics`` over plain HTTP with a bounded timeout, and
Envoy's admin API (``/clusters`` and ``/stats`` as JSON) through :class:`EnvoyAdmin`. Rates and
latency quantiles come from the difference between this poll and the previous one, the way
Prometheus' ``rate()`` and ``histogram_quantile()`` compute them. A source that does not answer
shows as ``down``; nothing here raises because a worker or Envoy is missing.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tensorgate.balancer.admin import AdminUnavailable, EnvoyAdmin, HostStatus

logger = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
Clock = Callable[[], float]

REQUESTS = "tensorgate_requests_total"
LATENCY_BUCKETS = "tensorgate_request_duration_seconds_bucket"
BATCH_SUM = "tensorgate_batch_size_sum"
BATCH_COUNT = "tensorgate_batch_size_count"
QUEUE_DEPTH = "tensorgate_queue_depth"
CACHE_HITS = "tensorgate_cache_hits_total"
CACHE_MISSES = "tensorgate_cache_misses_total"
REJECTED = "tensorgate_rejected_total"
INFLIGHT = "tensorgate_inflight_requests"


# -- the math -----------------------------------------------------------------------------------


def counter_increase(before: float, after: float) -> float:
    """How much a counter grew; a counter that went down was reset (its process restarted)."""
    return after - before if after >= before else after


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """The ``q`` quantile of ``(upper bound, cumulative count)`` buckets, as Prometheus computes it.

    Linear interpolation inside the bucket that holds the rank; a rank in the ``+Inf`` bucket gives
    the highest finite bound. NaN when there is no observation or no ``+Inf`` bucket.
    """
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return math.nan
    observations = ordered[-1][1]
    if observations <= 0:
        return math.nan
    rank = q * observations
    index = next(
        i for i, (_, count) in enumerate(ordered) if count >= rank or i == len(ordered) - 1
    )
    if index == len(ordered) - 1:
        return ordered[-2][0]
    upper, count = ordered[index]
    if index == 0 and upper <= 0:
        return upper
    lower, below = (0.0, 0.0) if index == 0 else ordered[index - 1]
    if count == below:
        return math.nan  # an empty bucket holds the rank (q = 0): 0/0, as in Prometheus
    return lower + (upper - lower) * (rank - below) / (count - below)


# -- one scrape of one worker -------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsScrape:
    """Every sample of one ``/metrics`` page, by sample name and labels, taken at ``at``."""

    at: float
    samples: dict[tuple[str, Labels], float]

    def select(self, name: str, **match: str) -> list[tuple[dict[str, str], float]]:
        """The samples named ``name`` whose labels include ``match``."""
        wanted = match.items()
        return [
            (dict(labels), value)
            for (sample, labels), value in self.samples.items()
            if sample == name and wanted <= dict(labels).items()
        ]

    def total(self, name: str, **match: str) -> float:
        return sum(value for _, value in self.select(name, **match))

    def models(self) -> list[str]:
        return sorted(
            {dict(labels)["model"] for _, labels in self.samples if dict(labels).get("model")}
        )


def parse_metrics(text: str, at: float) -> MetricsScrape:
    """Parse the Prometheus text format; raises ``ValueError`` on a page that is not one."""
    samples: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return MetricsScrape(at=at, samples=samples)


def fetch(url: str, timeout: float) -> str:
    """GET ``url`` and return its body; raises ``OSError`` (``URLError``) when it cannot."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode("utf-8"))


def describe(error: Exception) -> str:
    """A short reason for a failed scrape, for the ``down`` row."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(error, urllib.error.URLError):
        reason = error.reason
        return describe(reason) if isinstance(reason, Exception) else str(reason)
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, ValueError):
        return "unreadable answer"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


# -- what the table shows -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRow:
    """One model on one worker, over the interval between two polls (rates per second)."""

    model: str
    throughput: float | None
    errors: float | None
    rejected: float | None
    p50: float | None
    p99: float | None
    batch_size: float | None
    queue_depth: float
    cache_hit_ratio: float | None


@dataclass(frozen=True)
class WorkerRow:
    name: str
    url: str
    down: str | None = None
    inflight: float | None = None
    models: tuple[ModelRow, ...] = ()


def _rate(before: MetricsScrape, after: MetricsScrape, name: str, **match: str) -> float:
    return counter_increase(before.total(name, **match), after.total(name, **match)) / (
        after.at - before.at
    )


def _buckets(scrape: MetricsScrape, model: str) -> dict[float, float]:
    buckets: dict[float, float] = {}
    for labels, value in scrape.select(LATENCY_BUCKETS, model=model):
        bound = float(labels["le"])
        buckets[bound] = buckets.get(bound, 0.0) + value
    return buckets


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def model_row(model: str, before: MetricsScrape | None, after: MetricsScrape) -> ModelRow:
    """Rates and quantiles of ``model`` between two scrapes; only gauges without ``before``."""
    queue_depth = after.total(QUEUE_DEPTH, model=model)
    if before is None or after.at <= before.at:
        return ModelRow(model, None, None, None, None, None, None, queue_depth, None)
    requests = _rate(before, after, REQUESTS, model=model)
    errors = requests - _rate(before, after, REQUESTS, model=model, status="OK")
    old, new = _buckets(before, model), _buckets(after, model)
    window = [(bound, counter_increase(old.get(bound, 0.0), count)) for bound, count in new.items()]
    batches = counter_increase(
        before.total(BATCH_COUNT, model=model), after.total(BATCH_COUNT, model=model)
    )
    items = counter_increase(
        before.total(BATCH_SUM, model=model), after.total(BATCH_SUM, model=model)
    )
    hits = _rate(before, after, CACHE_HITS, model=model)
    lookups = hits + _rate(before, after, CACHE_MISSES, model=model)
    return ModelRow(
        model=model,
        throughput=requests,
        errors=errors,
        rejected=_rate(before, after, REJECTED, model=model),
        p50=_finite(histogram_quantile(0.5, window)),
        p99=_finite(histogram_quantile(0.99, window)),
        batch_size=items / batches if batches > 0 else None,
        queue_depth=queue_depth,
        cache_hit_ratio=hits / lookups if lookups > 0 else None,
    )


# -- Envoy --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvoyScrape:
    at: float
    hosts: dict[str, HostStatus]
    ejections_total: float
    ejections_active: float


@dataclass(frozen=True)
class HostRow:
    address: str
    state: str
    rq_active: float
    throughput: float | None
    ejections_seen: int


@dataclass(frozen=True)
class EnvoyRow:
    url: str
    down: str | None = None
    hosts: tuple[HostRow, ...] = ()
    ejections_total: float = 0.0
    ejections_active: float = 0.0


def host_state(host: HostStatus) -> str:
    if "failed_outlier_check" in host.flags:
        return "ejected"
    return "healthy" if host.healthy else "unhealthy"


# -- polling ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A worker's ``/metrics`` URL and the name it has in the table."""

    name: str
    url: str


@dataclass(frozen=True)
class Frame:
    workers: tuple[WorkerRow, ...]
    envoy: EnvoyRow | None
    interval: float | None

    @property
    def anything_up(self) -> bool:
        return any(w.down is None for w in self.workers) or (
            self.envoy is not None and self.envoy.down is None
        )


@dataclass
class Top:
    """Polls the workers and Envoy, keeping the previous poll to compute rates against."""

    targets: Sequence[Target]
    admin: EnvoyAdmin | None = None
    cluster: str = "tensorgate_workers"
    timeout: float = 0.5
    clock: Clock = time.monotonic
    _workers: dict[str, MetricsScrape] = field(default_factory=dict)
    _envoy: EnvoyScrape | None = None
    _ejections_seen: dict[str, int] = field(default_factory=dict)
    _last_poll: float | None = None

    def scrape_worker(self, target: Target) -> MetricsScrape | str:
        """One worker's metrics, or why they could not be read."""
        try:
            text = fetch(target.url, self.timeout)
            return parse_metrics(text, self.clock())
        except (OSError, ValueError) as error:
            logger.debug("scrape of %s failed: %s", target.url, error)
            return describe(error)

    def scrape_envoy(self) -> EnvoyScrape | str:
        """Envoy's hosts and ejection counters, or why they could not be read."""
        assert self.admin is not None
        prefix = f"cluster.{self.cluster}.outlier_detection."
        try:
            hosts = self.admin.hosts(self.cluster)
            counters = self.admin.stats(prefix)
        except (AdminUnavailable, ValueError) as error:
            logger.debug("scrape of %s failed: %s", self.admin.base_url, error)
            cause = error.__cause__
            return describe(cause if isinstance(cause, Exception) else error)
        return EnvoyScrape(
            at=self.clock(),
            hosts={f"{h.host}:{h.port}": h for h in hosts},
            ejections_total=counters.get(f"{prefix}ejections_enforced_total", 0),
            ejections_active=counters.get(f"{prefix}ejections_active", 0),
        )

    def poll(self) -> Frame:
        """Scrape every source at once, each read bounded, and compare with the last poll."""
        with ThreadPoolExecutor(
            max_workers=min(16, len(self.targets) + 1), thread_name_prefix="tensorgate-top"
        ) as pool:
            envoy_future = pool.submit(self.scrape_envoy) if self.admin else None
            scrapes = list(pool.map(self.scrape_worker, self.targets))
            envoy = envoy_future.result() if envoy_future else None
        now = self.clock()
        interval = None if self._last_poll is None else now - self._last_poll
        self._last_poll = now
        rows = tuple(self._worker_row(t, s) for t, s in zip(self.targets, scrapes, strict=True))
        return Frame(workers=rows, envoy=self._envoy_row(envoy), interval=interval)

    def _worker_row(self, target: Target, scrape: MetricsScrape | str) -> WorkerRow:
        if isinstance(scrape, str):
            self._workers.pop(target.name, None)
            return WorkerRow(target.name, target.url, down=scrape)
        before = self._workers.get(target.name)
        self._workers[target.name] = scrape
        models = tuple(model_row(m, before, scrape) for m in scrape.models())
        return WorkerRow(target.name, target.url, inflight=scrape.total(INFLIGHT), models=models)

    def _envoy_row(self, scrape: EnvoyScrape | str | None) -> EnvoyRow | None:
        if scrape is None or self.admin is None:
            return None
        if isinstance(scrape, str):
            self._envoy = None
            return EnvoyRow(self.admin.base_url, down=scrape)
        before, self._envoy = self._envoy, scrape
        hosts = []
        for address, host in sorted(scrape.hosts.items()):
            previous = before.hosts.get(address) if before else None
            ejected = host_state(host) == "ejected"
            if ejected and not (previous and host_state(previous) == "ejected"):
                self._ejections_seen[address] = self._ejections_seen.get(address, 0) + 1
            throughput = None
            if before and previous and scrape.at > before.at:
                increase = counter_increase(previous.rq_total, host.rq_total)
                throughput = increase / (scrape.at - before.at)
            hosts.append(
                HostRow(
                    address=address,
                    state=host_state(host),
                    rq_active=host.stats.get("rq_active", 0),
                    throughput=throughput,
                    ejections_seen=self._ejections_seen.get(address, 0),
                )
            )
        return EnvoyRow(
            self.admin.base_url,
            hosts=tuple(hosts),
            ejections_total=scrape.ejections_total,
            ejections_active=scrape.ejections_active,
        )


# -- rendering ----------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1%}"


def workers_table(rows: Sequence[WorkerRow]) -> Table:
    table = Table(title="workers", title_justify="left", expand=False)
    for header in ("worker", "model", "req/s", "p50 ms", "p99 ms", "batch", "queue"):
        if header in ("worker", "model"):
            table.add_column(header, no_wrap=True)
        else:
            table.add_column(header, justify="right")
    for header in ("cache hit", "err/s", "rej/s", "inflight"):
        table.add_column(header, justify="right")
    for worker in rows:
        if worker.down is not None:
            table.add_row(worker.name, Text(f"down: {worker.down}", style="bold red"))
            continue
        if not worker.models:
            table.add_row(
                worker.name, Text("no models", style="dim"), *[""] * 8, _number(worker.inflight, 0)
            )
        for i, m in enumerate(worker.models):
            table.add_row(
                worker.name if i == 0 else "",
                m.model,
                _number(m.throughput),
                _ms(m.p50),
                _ms(m.p99),
                _number(m.batch_size, 2),
                _number(m.queue_depth, 0),
                _percent(m.cache_hit_ratio),
                Text(_number(m.errors), style="red" if m.errors else ""),
                Text(_number(m.rejected), style="yellow" if m.rejected else ""),
                _number(worker.inflight, 0) if i == 0 else "",
            )
    return table


def envoy_table(envoy: EnvoyRow) -> RenderableType:
    if envoy.down is not None:
        return Text(f"envoy {envoy.url}: down: {envoy.down}", style="bold red")
    table = Table(
        title="envoy",
        title_justify="left",
        caption=(
            f"ejections: {envoy.ejections_total:.0f} enforced since start, "
            f"{envoy.ejections_active:.0f} active"
        ),
        caption_justify="left",
    )
    table.add_column("host")
    table.add_column("state")
    for header in ("active", "req/s", "ejections seen"):
        table.add_column(header, justify="right")
    styles = {"healthy": "green", "ejected": "bold red", "unhealthy": "yellow"}
    for host in envoy.hosts:
        table.add_row(
            host.address,
            Text(host.state, style=styles[host.state]),
            _number(host.rq_active, 0),
            _number(host.throughput),
            str(host.ejections_seen),
        )
    return table


def render(frame: Frame) -> RenderableType:
    """The whole frame: a header line, the workers' table, Envoy's table."""
    up = sum(w.down is None for w in frame.workers)
    interval = "first poll" if frame.interval is None else f"over {frame.interval:.1f} s"
    header = Text(f"tensorgate top: {up}/{len(frame.workers)} workers up, rates {interval}")
    parts: list[RenderableType] = [header, workers_table(frame.workers)]
    if frame.envoy is not None:
        parts.append(envoy_table(frame.envoy))
    return Group(*parts)
