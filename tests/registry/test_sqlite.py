"""The memory and SQLite instance registries: expiry, chute filter, models, removal, and one
SQLite file shared between processes' views."""

from __future__ import annotations

from pathlib import Path

import pytest

from chutes_subnet.e2ee import KeyPair
from chutes_subnet.registry import InstanceRecord, MemoryInstanceRegistry, SQLiteInstanceRegistry
from tests.gateway_fixtures import named_instance_id as iid
from tests.gateway_fixtures import named_record as rec


@pytest.mark.parametrize("registry_kind", ["memory", "sqlite"])
def test_registry_hides_expired_and_filters_by_chute(tmp_path: Path, registry_kind: str) -> None:
    reg = MemoryInstanceRegistry() if registry_kind == "memory" else \
        SQLiteInstanceRegistry(tmp_path / "r.db", cache_seconds=0)
    reg.upsert(rec("a", expires=100))
    reg.upsert(rec("b", expires=50))
    reg.upsert(rec("c", chute="c2", model="m2", expires=100))
    assert {r.instance_id for r in reg.list_verified(now=60)} == {iid("a"), iid("c")}
    assert [r.instance_id for r in reg.list_verified("c1", now=60)] == [iid("a")]
    assert reg.models(now=60) == [("m1", "c1"), ("m2", "c2")]
    assert reg.models(now=200) == []
    assert reg.remove("hk", iid("a"))
    assert [r.instance_id for r in reg.list_verified("c1", now=10)] == [iid("b")]


def test_sqlite_registry_is_shared_between_processes_views(tmp_path: Path) -> None:
    writer = SQLiteInstanceRegistry(tmp_path / "r.db")
    reader = SQLiteInstanceRegistry(tmp_path / "r.db", cache_seconds=0)
    kp = KeyPair.generate()
    r = InstanceRecord(kp.instance_id, "c1", "m1", "http://1.2.3.4:8000", "hk", 7, kp.public_b64,
                       (2,), 1.0, 99.0, 0.7, True)
    writer.upsert(r)
    assert reader.list_verified(now=50) == [r]  # round-trips every field incl. the tuple
