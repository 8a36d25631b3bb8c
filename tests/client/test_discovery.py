"""Client discovery state: parsing, nonce pool rotation, expiry, instance dropping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chutes_subnet.client.discovery import (
    DiscoveryCache,
    looks_like_chute_id,
    parse_instances,
    parse_models,
)
from chutes_subnet.errors import EnvelopeFormatError
from chutes_subnet.wire.protocol import chute_id_for_model


def answer(n_inst: int = 2, n_nonces: int = 2, ttl: int = 55) -> dict:
    return {"instances": [{"instance_id": f"i{i}", "e2e_pubkey": "cGs=", "e2e_versions": [1, 2],
                           "nonces": [f"n{i}{j}" for j in range(n_nonces)]}
                          for i in range(n_inst)], "nonce_expires_in": ttl}


def test_pool_rotates_across_instances_until_exhausted() -> None:
    t = [0.0]
    cache = DiscoveryCache(clock=lambda: t[0])
    cache.refill("c", *parse_instances(answer()))
    got = [cache.take("c", set()) for _ in range(4)]
    assert [(o.instance_id, n) for o, n in got] == [("i0", "n00"), ("i1", "n10"),
                                                    ("i0", "n01"), ("i1", "n11")]
    assert cache.take("c", set()) is None


def test_pool_expires_before_the_gateway_ttl_and_skips_avoided() -> None:
    t = [0.0]
    cache = DiscoveryCache(clock=lambda: t[0])
    cache.refill("c", *parse_instances(answer(ttl=10)))
    offer, _ = cache.take("c", {"i0"})
    assert offer.instance_id == "i1" and offer.e2e_versions == (1, 2)
    assert offer.e2e_pubkey == b"pk"  # decoded once, at discovery
    cache.drop_instance("c", "i1")
    assert cache.take("c", {"i0"}) is None
    t[0] = 5.0  # 10 s announced minus the 5 s safety margin
    assert cache.take("c", set()) is None


def test_instance_without_versions_is_v1_only() -> None:
    body = {"instances": [{"instance_id": "i", "e2e_pubkey": "cGs=", "nonces": ["n"]}]}
    (offer, nonces), = parse_instances(body)[0]
    assert offer.e2e_versions == (1,) and nonces == ["n"]


def test_models_map_and_uuid_names() -> None:
    cache = DiscoveryCache()
    cid = chute_id_for_model("m")
    assert cache.chute_for(cid) == cid and looks_like_chute_id(cid)
    assert cache.chute_for("m") is None
    cache.set_models(parse_models({"data": [{"id": "m", "chute_id": cid}, {"id": 3}, "junk"]}))
    assert cache.chute_for("m") == cid


@pytest.mark.parametrize("body", [None, [], {"instances": "x"}, {"instances": [{"nonces": []}]},
                                  {"instances": [{"instance_id": "i", "e2e_pubkey": "p",
                                                  "nonces": 5}]},
                                  {"instances": [{"instance_id": "i", "e2e_pubkey": "p!!=",
                                                  "nonces": ["n"]}]},
                                  {"instances": [{"instance_id": "i", "e2e_pubkey": "cGs=",
                                                  "nonces": ["n"], "e2e_versions": ["x"]}]}])
def test_malformed_discovery_answers_are_refused(body: object) -> None:
    with pytest.raises(EnvelopeFormatError):
        parse_instances(body)


@given(st.recursive(st.none() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=12), c,
                                                                         max_size=3),
                    max_leaves=10))
def test_parse_instances_fails_only_with_our_error(body: object) -> None:
    try:
        parse_instances({"instances": [body]})
    except EnvelopeFormatError:
        pass
