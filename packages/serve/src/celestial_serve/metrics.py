"""What the server counts, exposed at ``GET /metrics`` in Prometheus' text format.

The HTTP processes count requests (by route and status), their latency and
the prediction-log records dropped; the inference workers count answers (by
label, ``unknown`` included) and the sizes of the batches they predict. So
that one scrape sees every process, `serve` runs prometheus-client's
multi-process mode (`use_shared_folder`): each process writes its values to
memory-mapped files in a private temporary folder, and ``/metrics`` adds them
up. The unknown rate is derived at each scrape from the answer counts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from celestial_models.ood import UNKNOWN

__all__ = [
    "CONTENT_TYPE",
    "HttpMetrics",
    "WorkerMetrics",
    "exposition",
    "route_label",
    "use_shared_folder",
]

#: The ``Content-Type`` of ``GET /metrics``.
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: prometheus-client's variable naming the multi-process folder.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The routes counted by name; any other path is counted as ``other``.
ROUTE_LABELS = frozenset(
    {"/", "/predict", "/health", "/info", "/metrics", "/docs", "/openapi.json"}
)
#: Seconds: a request on this stack takes about a millisecond.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def route_label(path: str) -> str:
    """The ``route`` label of a request path: the path of a known route, else ``other``."""
    return path if path in ROUTE_LABELS else "other"


def use_shared_folder(folder: Path | None) -> None:
    """Make this process and the processes it starts count into ``folder`` (None: stop).

    Sets ``PROMETHEUS_MULTIPROC_DIR`` (spawned workers read it when they import
    prometheus-client; forked HTTP processes inherit this process's choice) and
    makes the metrics this process creates from now on write there.
    """
    if folder is None:
        os.environ.pop(MULTIPROC_ENV, None)
    else:
        os.environ[MULTIPROC_ENV] = str(folder)
    # prometheus-client reads the variable once, on import: read it again.
    values.ValueClass = values.get_value_class()


def shared_folder() -> Path | None:
    """The multi-process folder this process counts into, if any."""
    folder = os.environ.get(MULTIPROC_ENV)
    return Path(folder) if folder else None


class HttpMetrics:
    """The HTTP process's metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "celestial_requests",
            "HTTP requests answered, by route and status code "
            "(status 'none': the client left before an answer).",
            ["route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "celestial_request_duration_seconds",
            "Seconds from a request's arrival to the start of its answer, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.dropped = Counter(
            "celestial_prediction_log_dropped",
            "Prediction-log records dropped because the writer fell behind.",
            registry=registry,
        )
        # The label children of each (route, status): a labels() lookup takes a lock.
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, path: str, status: int, seconds: float | None) -> None:
        """Count a request to ``path`` answered ``status`` (0: none) after ``seconds``."""
        key = (path if path in ROUTE_LABELS else "other", status)
        children = self._children.get(key)
        if children is None:
            route = key[0]
            children = self._children[key] = (
                self.requests.labels(route, str(status) if status else "none"),
                self.latency.labels(route),
            )
        requests, latency = children
        requests.inc()
        if seconds is not None:
            latency.observe(seconds)


class WorkerMetrics:
    """An inference worker's metrics: the answers it gave and the batches it predicted."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()
        self.answers = Counter(
            "celestial_answers",
            "Images answered, by label ('unknown' for those unlike every class).",
            ["label"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "celestial_batch_size",
            "Images per batch the model predicted (padding excluded).",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self._answers: dict[str, Any] = {}

    def answered(self, label: str) -> None:
        """Count one answer labelled ``label``."""
        counter = self._answers.get(label)
        if counter is None:
            counter = self._answers[label] = self.answers.labels(label)
        counter.inc()


class UnknownRate:
    """A collector adding the share of unknown answers to another collector's metrics."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        """The source's metrics, then ``celestial_unknown_rate``."""
        families = list(self.source.collect())
        yield from families
        answers = {
            sample.labels.get("label"): sample.value
            for family in families
            if family.name == "celestial_answers"
            for sample in family.samples
            if sample.name == "celestial_answers_total"
        }
        total = sum(answers.values())
        rate = GaugeMetricFamily(
            "celestial_unknown_rate",
            "Share of answers that were 'unknown' since the server started (0 before any).",
        )
        rate.add_metric([], answers.get(UNKNOWN, 0.0) / total if total else 0.0)
        yield rate


class _Registries:
    """Collects several registries (this process's, without a shared folder)."""

    def __init__(self, registries: Iterable[CollectorRegistry]) -> None:
        self.registries = list(registries)

    def collect(self) -> Iterator[Metric]:
        for registry in self.registries:
            yield from registry.collect()


def exposition(*local: CollectorRegistry) -> bytes:
    """The text of ``GET /metrics``: every process's counts, and the unknown rate.

    With a shared folder (`use_shared_folder`), the values of every process
    that wrote there; without one, those of the ``local`` registries only.
    """
    folder = shared_folder()
    source: Any = _MultiProcess(folder) if folder is not None else _Registries(local)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(UnknownRate(source))
    return generate_latest(registry)


class _MultiProcess:
    """prometheus-client's multi-process collector, not registered anywhere."""

    def __init__(self, folder: Path) -> None:
        self.collector = MultiProcessCollector(None, str(folder))

    def collect(self) -> Iterator[Metric]:
        return iter(self.collector.collect())
