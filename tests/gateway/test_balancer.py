"""The load balancer: prefers score and idle instances, benches failed ones for a cooldown."""

from __future__ import annotations

from chutes_subnet.gateway.balancer import LoadBalancer
from tests.gateway_fixtures import named_instance_id as iid
from tests.gateway_fixtures import named_record as rec


def test_balancer_prefers_score_and_idle_and_benches_failures() -> None:
    import random

    t = [0.0]
    lb = LoadBalancer(cooldown=5, rng=random.Random(1), clock=lambda: t[0])
    good, poor = rec("good", score=1.0), rec("poor", score=0.01)
    firsts = [lb.rank([good, poor], 2)[0].instance_id for _ in range(400)]
    assert firsts.count(iid("good")) > 300
    for _ in range(50):
        lb.acquire(iid("good"))
    firsts = [lb.rank([good, poor], 2)[0].instance_id for _ in range(400)]
    assert firsts.count(iid("poor")) > 200  # the busy instance yields to the idle one
    lb.mark_failed(iid("poor"))
    assert [r.instance_id for r in lb.rank([good, poor], 2)] == [iid("good")]
    assert [r.instance_id for r in lb.rank([poor], 2)] == [iid("poor")]  # nothing else left
    t[0] = 6
    assert len(lb.rank([good, poor], 2)) == 2
