"""`GET /metrics`: Prometheus text format through prometheus-client.

Counted in this process: API requests by method, route (the path template,
so the number of series stays bounded) and status, and their durations.
Read from the database at each scrape, so every process sharing it reports
the same: runs by state, journal entries (effects) by builtin and status, and
each schedule's fire lag (how late its newest started fire was recorded, from
its due time with jitter).
"""

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401  (routes.health serves it)


disable_created_metrics()  # no *_created series: they double the output and say nothing here


class StoreCollector:
    def __init__(self, store):
        self.store = store

    def collect(self):
        runs = GaugeMetricFamily("flowmetal_runs", "Runs in the database by state", labels=["state"])
        for state, n in self.store.run_state_counts().items():
            runs.add_metric([state], n)
        yield runs
        effects = GaugeMetricFamily("flowmetal_journal_entries", "Journal entries (effects) by builtin and status",
                                    labels=["builtin", "status"])
        for (builtin, status), n in sorted(self.store.effect_counts().items()):
            effects.add_metric([builtin, status], n)
        yield effects
        lag = GaugeMetricFamily("flowmetal_schedule_fire_lag_seconds",
                                "Seconds from the newest started fire's due time to its recording", labels=["schedule"])
        for name, seconds in sorted(self.store.last_fire_lags().items()):
            lag.add_metric([name], seconds)
        yield lag


class Metrics:
    def __init__(self, store):
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("flowmetal_api_requests", "API requests by method, route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.seconds = Histogram("flowmetal_api_request_seconds", "API request durations by route",
                                 ["route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60))
        self.registry.register(StoreCollector(store))

    def request(self, method, route, status, seconds):
        self.requests.labels(method, route, str(status)).inc()
        self.seconds.labels(route).observe(seconds)

    def render(self):
        """The exposition text (reads the database: call it in the threadpool)."""
        return generate_latest(self.registry)
