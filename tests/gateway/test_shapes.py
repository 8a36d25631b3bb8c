"""The organic request-shape sample: uniform over everything seen, cheap per request."""

from __future__ import annotations

import random

from chutes_subnet.gateway.shapes import RequestShapes


def _inclusions(n: int, k: int, runs: int) -> list[int]:
    counts = [0] * n
    for seed in range(runs):
        shapes = RequestShapes(capacity=k, rng=random.Random(seed))
        for i in range(n):
            shapes.record(i, False, "/v1/chat/completions")
        sample = shapes.snapshot()
        assert len(sample) == k and len({s.request_bytes for s in sample}) == k
        for shape in sample:
            counts[shape.request_bytes] += 1
    return counts


def test_every_request_is_equally_likely_to_be_in_the_sample() -> None:
    n, k, runs = 400, 20, 1500
    counts = _inclusions(n, k, runs)
    expected, var = runs * k / n, runs * (k / n) * (1 - k / n)
    chi2 = sum((c - expected) ** 2 / var for c in counts) / n
    assert 0.8 < chi2 < 1.25, chi2  # a biased sampler (e.g. favouring late requests) is far off
    quarter = n // 4
    early, late = sum(counts[:quarter]) / quarter, sum(counts[-quarter:]) / quarter
    assert abs(early - expected) < 0.06 * expected and abs(late - expected) < 0.06 * expected


class _CountingRandom(random.Random):
    draws = 0

    def random(self) -> float:
        self.draws += 1
        return super().random()

    def randrange(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.draws += 1
        return super().randrange(*args, **kwargs)


def test_requests_not_kept_cost_no_random_draw() -> None:
    rng = _CountingRandom(7)
    shapes = RequestShapes(capacity=100, rng=rng)
    for i in range(200_000):
        shapes.record(i, i % 2 == 0, "/v1/completions")
    # Algorithm L: about 3 draws per kept request, ~k(1 + ln(n/k)) kept (~860 here)
    assert rng.draws < 4_000, rng.draws
    assert len(shapes.snapshot()) == 100
