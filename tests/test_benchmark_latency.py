"""The latency method: percentile maths, the run loop's rules, and that it stays torch-free for boards."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.benchmark.latency import (StopRule, batch_of_one, measure_latency, precision_record, quantile_interval,
                                        resolve_threads, summarise)


def test_summary_statistics_on_known_samples():
    s = summarise(np.arange(1, 11, dtype=float))  # 1..10 ms
    assert s["mean"] == pytest.approx(5.5)
    assert s["std"] == pytest.approx(3.0276503540974917)  # sample std, ddof=1
    assert (s["min"], s["max"]) == (1.0, 10.0)
    # linear interpolation between closest ranks: rank = p/100·(n−1)
    assert s["p50"] == pytest.approx(5.5)
    assert s["p90"] == pytest.approx(9.1)
    assert s["p99"] == pytest.approx(9.91)


def test_percentiles_ignore_sample_order_and_handle_one_sample():
    s = summarise([4.0, 1.0, 3.0, 2.0])
    assert s["p50"] == pytest.approx(2.5) and s["p90"] == pytest.approx(3.7)
    one = summarise([2.0])
    assert one["p50"] == one["p99"] == 2.0 and one["std"] == 0.0
    with pytest.raises(ValueError):
        summarise([])


class FakeClock:
    """Time advances only when the fake runtime 'works': no sleeping, exact expected numbers."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeRuntime:
    """first call 50 ms, warm-up calls 10 ms each, later calls 1 ms; records which image it was given."""

    def __init__(self, clock: FakeClock, warmup: int):
        self.clock, self.warmup, self.calls, self.seen, self.shapes = clock, warmup, 0, [], []

    def predict(self, x):
        self.clock.t += 0.050 if self.calls == 0 else (0.010 if self.calls <= self.warmup else 0.001)
        self.calls += 1
        self.seen.append(int(x[0, 0, 0, 0]))
        self.shapes.append(x.shape)
        return np.zeros((len(x), 3), np.float32)


def _run(images, warmup, min_runs, min_seconds, precision_pct=None):
    clock = FakeClock()
    made = []

    def factory():
        clock.t += 0.007  # 7 ms to load
        made.append(FakeRuntime(clock, warmup))
        return made[-1]

    rule = StopRule(min_runs=min_runs, min_seconds=min_seconds, precision_pct=precision_pct)
    res = measure_latency(factory, images, warmup=warmup, rule=rule, keep_samples=True, clock=clock)
    return res, made[0]


def _images(n):
    x = np.zeros((n, 1, 2, 2), np.float32)
    x[:, 0, 0, 0] = np.arange(n)
    return x


def test_fixed_rule_min_runs_when_runs_are_fast():
    res, rt = _run(_images(7), warmup=3, min_runs=50, min_seconds=0.010)  # 50 runs take 50 ms > 10 ms
    assert res["runs"] == 50
    assert rt.calls == 1 + 3 + 50


def test_fixed_rule_min_seconds_when_min_runs_is_reached_early():
    res, _ = _run(_images(7), warmup=0, min_runs=5, min_seconds=0.2)  # 1 ms per call: 200 calls to pass 0.2 s
    assert res["runs"] == 200
    assert res["measured_s"] == pytest.approx(0.2)


def test_init_first_inference_and_warmup_are_not_latency_samples():
    res, _ = _run(_images(7), warmup=4, min_runs=20, min_seconds=0.0)
    assert res["init_ms"] == pytest.approx(7.0)
    assert res["first_ms"] == pytest.approx(50.0)
    assert res["warmup"] == 4
    assert np.allclose(res["samples_ms"], 1.0)  # no 10 ms warm-up call and no 50 ms first call leaked in
    assert res["latency_ms"]["p99"] == pytest.approx(1.0) and res["latency_ms"]["max"] == pytest.approx(1.0)


def test_real_images_are_cycled_in_order_one_at_a_time():
    res, rt = _run(_images(5), warmup=2, min_runs=9, min_seconds=0.0)
    assert all(shape == (1, 1, 2, 2) for shape in rt.shapes)
    assert rt.seen == [0, 1, 2] + [0, 1, 2, 3, 4, 0, 1, 2, 3]  # first, warm-up, then the timed runs from image 0


def test_result_carries_the_runtime_and_memory_fields():
    res, rt = _run(_images(3), warmup=0, min_runs=3, min_seconds=0.0)
    assert res.pop("runtime") is rt
    assert res["rss_before_mb"] > 0 and res["rss_delta_mb"] >= 0
    assert res["memory_method"] in ("peak (VmHWM)", "sampled RSS")


def test_bad_arguments():
    for bad in ({"min_runs": 0}, {"max_seconds": float("inf")}, {"max_seconds": 0}, {"precision_pct": 0.0}, {"min_seconds": -1}):
        with pytest.raises(ValueError):
            StopRule(**bad)
    with pytest.raises(ValueError):
        batch_of_one(np.zeros((0, 1, 2, 2), np.float32))
    assert resolve_threads(3) == 3 and resolve_threads(0) >= 1


def test_latency_and_schema_modules_import_without_torch_or_toolchains():
    """The on-device runner imports these on boards that have numpy and a runtime only."""
    code = (
        "import sys\n"
        "import pipeline.benchmark.latency, pipeline.benchmark.gates, pipeline.benchmark.accuracy, pipeline.report.schema\n"
        "heavy = {'torch', 'tensorflow', 'onnx', 'onnxruntime', 'openvino', 'matplotlib', 'pydantic', 'rich'}\n"
        "loaded = sorted(heavy & {m.split('.')[0] for m in sys.modules})\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class EngineRuntime(FakeRuntime):
    """A runtime with an engine call: invoke costs 1 ms, predict adds 0.5 ms of wrapper work around it."""

    def __init__(self, clock, warmup):
        super().__init__(clock, warmup)
        self.prepared = 0
        self.invoked = []

    def engine_input(self, x):
        self.prepared += 1  # must happen before timing: the clock does not move here
        return x * 10

    def invoke(self, batch):
        self.clock.t += 0.001
        self.invoked.append(int(batch[0, 0, 0, 0]))
        return np.zeros((len(batch), 3), np.float32)

    def predict(self, x):
        out = super().predict(x)
        if self.calls > self.warmup + 1:
            self.clock.t += 0.0005
        return out


def test_engine_call_is_timed_apart_from_the_whole_predict():
    clock = FakeClock()
    made = []

    def factory():
        made.append(EngineRuntime(clock, 2))
        return made[-1]

    rule = StopRule(min_runs=6, precision_pct=None)
    res = measure_latency(factory, _images(4), warmup=2, rule=rule, keep_samples=True, clock=clock)
    rt = made[0]
    assert res["timed"] == "invoke" and res["runs"] == 6
    assert rt.prepared == 4  # every image prepared once, outside the timed calls
    assert rt.invoked == [0, 10, 20, 30, 0, 10]  # the prepared inputs, cycled in order
    assert res["latency_ms"]["p50"] == pytest.approx(1.0) and np.allclose(res["samples_ms"], 1.0)
    assert res["e2e_latency_ms"]["p50"] == pytest.approx(1.5)


def test_runtime_without_an_engine_call_is_timed_by_predict():
    res, _ = _run(_images(3), warmup=0, min_runs=4, min_seconds=0.0)
    assert res["timed"] == "predict"
    assert res["latency_ms"] == res["e2e_latency_ms"]


# --- the precision rule: stop once p50 and p90 are known to ±precision_pct % ----------------------------------


class SampledRuntime:
    """Each call costs the next draw of ``draw()`` seconds on the fake clock (no engine call: timed by predict)."""

    def __init__(self, clock: FakeClock, draw):
        self.clock, self.draw, self.calls = clock, draw, 0

    def predict(self, x):
        self.clock.t += float(self.draw())
        self.calls += 1
        return np.zeros((1, 3), np.float32)


def _sampled(draw, rule):
    clock = FakeClock()
    return measure_latency(lambda: SampledRuntime(clock, draw), _images(4), warmup=0, rule=rule, keep_samples=True, clock=clock)


def test_quantile_interval_is_open_until_its_order_statistics_exist():
    a = np.arange(1.0, 21.0)  # 20 samples: p50's ranks exist, p90's upper rank (⌈18 + 2.63⌉ + 1 = 22) does not
    lo, hi = quantile_interval(a, 0.5)
    assert lo is not None and hi is not None and lo < 10.5 < hi
    assert quantile_interval(a, 0.9)[1] is None
    rec = precision_record(a, 3.0)
    assert rec["p90_high"] is None and rec["half_width_pct"] is None and rec["reached"] is False


def test_tight_distribution_stops_early_on_precision():
    rng = np.random.default_rng(0)
    rule = StopRule(min_runs=20, precision_pct=3.0, max_seconds=10.0)
    res = _sampled(lambda: 1e-3 * (1 + 0.01 * rng.standard_normal()), rule)  # 1 ms ± 1 %
    p = res["latency_precision"]
    assert p["stopped_by"] == "precision" and p["reached"] is True and p["half_width_pct"] <= 3.0
    assert res["runs"] < 200 and res["measured_s"] < 0.25  # far from the 10 s cap
    assert p["p50_low"] <= res["latency_ms"]["p50"] <= p["p50_high"] and p["p90_low"] <= res["latency_ms"]["p90"] <= p["p90_high"]


def test_wide_distribution_runs_to_the_cap_and_says_so():
    rng = np.random.default_rng(1)
    rule = StopRule(min_runs=20, precision_pct=0.5, max_seconds=0.5)
    res = _sampled(lambda: 1e-3 * rng.lognormal(0.0, 1.0), rule)  # heavy-tailed: ±0.5 % needs far more than 0.5 s
    p = res["latency_precision"]
    assert p["stopped_by"] == "max_seconds" and p["reached"] is False and p["half_width_pct"] > 0.5
    assert 0.5 <= res["measured_s"] < 0.5 + 0.05  # stops at the first call past the cap
    assert p["target_pct"] == 0.5 and p["confidence"] == 0.95


def test_min_seconds_above_the_cap_still_runs_that_long():
    rng = np.random.default_rng(2)
    res = _sampled(lambda: 1e-3 * rng.lognormal(0.0, 1.0), StopRule(min_runs=5, min_seconds=0.3, precision_pct=0.1, max_seconds=0.1))
    assert res["measured_s"] >= 0.3 and res["latency_precision"]["stopped_by"] == "max_seconds"


def test_fixed_rule_is_kept_when_precision_is_off():
    res, _ = _run(_images(7), warmup=0, min_runs=5, min_seconds=0.2)
    assert res["latency_precision"]["stopped_by"] == "fixed" and res["latency_precision"]["reached"] is None
    assert res["latency_precision"]["half_width_pct"] is not None  # the interval is still reported


@pytest.mark.parametrize("q", [0.5, 0.9])
def test_interval_contains_the_true_quantile_at_about_the_stated_rate(q):
    """Coverage over many synthetic samples from a skewed distribution with a known quantile (lognormal)."""
    rng = np.random.default_rng(3)
    from statistics import NormalDist

    true = float(np.exp(NormalDist().inv_cdf(q)))
    hits, trials = 0, 1000
    for _ in range(trials):
        lo, hi = quantile_interval(np.sort(rng.lognormal(0.0, 1.0, size=300)), q)
        hits += lo <= true <= hi
    assert hits / trials >= 0.93  # nominal 95 %; the slack is the normal approximation's and the trials' noise


def test_stopped_run_interval_contains_the_true_quantiles():
    """Where the rule stops, the recorded intervals bracket the true p50 and p90 of the sampled distribution."""
    from statistics import NormalDist

    misses = 0
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        res = _sampled(lambda: 1e-3 * rng.lognormal(0.0, 0.05), StopRule(min_runs=25, precision_pct=3.0, max_seconds=5.0))
        p = res["latency_precision"]
        assert p["reached"]
        for name, q in (("p50", 0.5), ("p90", 0.9)):
            true = float(np.exp(0.05 * NormalDist().inv_cdf(q)))
            misses += not (p[f"{name}_low"] <= true <= p[f"{name}_high"])
    assert misses <= 8  # 80 intervals at a nominal 95 %: about 4 misses expected


def test_stop_rule_round_trips_through_recorded_settings():
    rule = StopRule(min_runs=30, min_seconds=0.0, precision_pct=2.0, max_seconds=1.5)
    assert StopRule.from_settings(rule.settings()) == rule
    old = StopRule.from_settings({"min_runs": 50, "min_seconds": 1.0})  # a results file from before the precision rule
    assert old.precision_pct is None and old.min_seconds == 1.0
