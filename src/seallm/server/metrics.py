"""Prometheus metrics of the front end, labelled by model (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

_LAT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
                80.0, 160.0, 640.0)
_LOAD_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TPOT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)


class ServerMetrics:
    """Latency histograms (s), request/token counters and engine load gauges."""

    def __init__(self, models: list[str], scheduling_policy: str, num_pages: int,
                 preemption_mode: str = "recompute") -> None:
        self.registry = r = CollectorRegistry()
        lab = ["model"]
        self.ttft = Histogram("seallm:time_to_first_token_seconds", "Time to first token (s)", lab,
                              buckets=_LAT_BUCKETS, registry=r)
        self.tpot = Histogram("seallm:time_per_output_token_seconds", "Time per output token after the first (s)",
                              lab, buckets=_TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("seallm:e2e_request_latency_seconds", "End-to-end request latency (s)", lab,
                             buckets=_LAT_BUCKETS, registry=r)
        self.queue = Histogram("seallm:request_queue_time_seconds", "Arrival to first scheduling (s)", lab,
                               buckets=_LAT_BUCKETS, registry=r)
        self.prompt_tokens = Counter("seallm:prompt_tokens", "Prompt tokens of finished requests", lab, registry=r)
        self.generation_tokens = Counter("seallm:generation_tokens", "Generated tokens", lab, registry=r)
        self.finished = Counter("seallm:request_success", "Finished requests by finish reason",
                                ["model", "finish_reason"], registry=r)
        self.running = Gauge("seallm:num_requests_running", "Requests holding KV pages", lab, registry=r)
        self.waiting = Gauge("seallm:num_requests_waiting", "Queued requests", lab, registry=r)
        self.kv_pages = Gauge("seallm:kv_cache_pages_used", "KV pages held by the model's requests", lab, registry=r)
        self.swapped = Gauge("seallm:num_requests_swapped", "Waiting requests whose KV is in host memory", lab,
                             registry=r)
        self.preemptions = Counter("seallm:num_preemptions", "Requests that lost their KV pages (recompute or swap)",
                                   lab, registry=r)
        self.swap_outs = Counter("seallm:num_swap_outs", "Preemptions that swapped KV pages to host memory", lab,
                                 registry=r)
        self.concurrent = Counter("seallm:num_concurrent_iterations",
                                  "Iterations of the model that ran at the same time as another model's, each on "
                                  "its share of the CPU threads (concurrent_models)", lab, registry=r)
        self.refused = Counter("seallm:num_requests_refused",
                               "HTTP requests refused by admission control (429: the model's waiting queue full, or "
                               "an SLO planner could not guarantee them with admission: reject)",
                               lab, registry=r)
        self.admissions = Counter("seallm:num_requests_admitted",
                                  "Sequences an SLO planner decided on, by its verdict (guaranteed: planned to "
                                  "meet their SLO; best_effort: served from leftover budget, preempted first)",
                                  ["model", "admission"], registry=r)
        self.forwarded = Counter("seallm:num_requests_forwarded",
                                 "HTTP requests a replica could not guarantee, forwarded to the next one "
                                 "(routing policy slo)", lab, registry=r)
        self._seen: dict[tuple[str, str], int] = {}
        self.engine_restarts = Counter("seallm:engine_restarts",  # exposed as seallm:engine_restarts_total
                                       "Restarts of the engine process after it died (attempts, failed ones "
                                       "included)", registry=r)
        self.kv_total = Gauge("seallm:kv_cache_pages_total", "Pages of the unified KV pool", registry=r)
        self.kv_total.set(num_pages)
        Info("seallm:scheduler", "Scheduling policy of the device", registry=r).info(
            {"policy": scheduling_policy, "preemption_mode": preemption_mode})
        self.model_loads = Counter("seallm:model_loads", "Models loaded onto the device at run time, by where the "
                                   "weights came from", ["model", "source"], registry=r)
        self.model_load_seconds = Histogram("seallm:model_load_seconds", "Time to load a model at run time (s)",
                                            lab, buckets=_LOAD_BUCKETS, registry=r)
        self.model_resident = Gauge("seallm:model_resident", "1 while the model's weights are on the device", lab,
                                    registry=r)
        self.model_weights_bytes = Gauge("seallm:model_weights_bytes", "Bytes of the model's weights on the "
                                         "device (0 while not resident)", lab, registry=r)
        for m in models:  # make every series visible from the start
            for g in (self.running, self.waiting, self.kv_pages, self.swapped, self.model_resident,
                      self.model_weights_bytes):
                g.labels(m).set(0)
            for src in ("host_cache", "disk"):
                self.model_loads.labels(m, src)
            self.preemptions.labels(m)
            self.swap_outs.labels(m)
            self.concurrent.labels(m)
            self.refused.labels(m)
            self.forwarded.labels(m)
            for a in ("guaranteed", "best_effort"):
                self.admissions.labels(m, a)

    def observe_finished(self, model: str, arrival: float, first_token: float | None, finish: float,
                         prompt_tokens: int, output_tokens: int, finish_reason: str,
                         first_scheduled: float | None) -> None:
        """Record one finished sequence (times in s, front-end clock; queue time from the engine)."""
        if first_token is not None:
            self.ttft.labels(model).observe(first_token - arrival)
            if output_tokens > 1:
                self.tpot.labels(model).observe((finish - first_token) / (output_tokens - 1))
        self.e2e.labels(model).observe(finish - arrival)
        if first_scheduled is not None:
            self.queue.labels(model).observe(max(0.0, first_scheduled - arrival))
        self.prompt_tokens.labels(model).inc(prompt_tokens)
        self.generation_tokens.labels(model).inc(output_tokens)
        self.finished.labels(model, finish_reason).inc()

    def observe_model_event(self, ev) -> None:
        """A ``ModelEvent`` from the engine: count loads and their time."""
        if ev.kind == "loaded":
            self.model_loads.labels(ev.model, ev.source).inc()
            self.model_load_seconds.labels(ev.model).observe(ev.seconds)
            self.model_resident.labels(ev.model).set(1)
            self.model_weights_bytes.labels(ev.model).set(ev.weights_bytes)
        elif ev.kind == "unloaded":
            self.model_resident.labels(ev.model).set(0)
            self.model_weights_bytes.labels(ev.model).set(0)

    def update_engine(self, stats: dict) -> None:
        for m, s in stats.items():
            self.model_resident.labels(m).set(1 if s.resident else 0)
            self.model_weights_bytes.labels(m).set(s.weights_bytes)
            self.running.labels(m).set(s.running)
            self.waiting.labels(m).set(s.waiting)
            self.kv_pages.labels(m).set(s.kv_pages_used)
            self.swapped.labels(m).set(s.swapped)
            # The engine sends running totals; the counters advance by what is new.
            for name, counter, total in (("preemptions", self.preemptions, s.preemptions),
                                         ("swap_outs", self.swap_outs, s.swap_outs),
                                         ("concurrent", self.concurrent, s.concurrent_iterations)):
                new = total - self._seen.get((name, m), 0)
                if new > 0:
                    counter.labels(m).inc(new)
                    self._seen[(name, m)] = total

    def render(self) -> bytes:
        return generate_latest(self.registry)
