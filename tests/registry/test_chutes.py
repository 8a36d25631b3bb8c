"""The chute registry: specs validated before anything is stored, owner-only changes,
every change versioned in an audit log; the same store on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chutes_subnet.registry.chute_store import SQLChuteStore
from chutes_subnet.registry.chutes import (
    ChuteForbidden,
    ChuteNotFound,
    ChuteSpecError,
    load_chute_toml,
    parse_chute_spec,
)
from chutes_subnet.stores.database import SQLiteDatabase, open_database
from chutes_subnet.wire.protocol import chute_id_for_model
from tests.chute_fixtures import IMAGE, chute_dict

OWNER, OTHER = "k_owner", "k_other"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLChuteStore]:
    if request.param == "sqlite":
        db = SQLiteDatabase(tmp_path / "chutes.db")
    else:
        db = open_database(request.getfixturevalue("postgres_url"))
    try:
        yield SQLChuteStore(db, cache_seconds=0)
    finally:
        db.close()


def test_a_valid_spec_derives_the_chute_id_and_keeps_the_manifest_canonical() -> None:
    spec = parse_chute_spec(chute_dict("acme/model-a"))
    assert spec.chute_id == chute_id_for_model("acme/model-a")
    assert spec.manifest["chute_id"] == spec.chute_id and spec.manifest["version"] == 1
    assert spec.workload_manifest().model_id == "acme/model-a"
    assert spec.min_instances == 1 and spec.max_instances == 4


def _with(path: str, value: object) -> dict:
    spec = chute_dict("acme/model-a")
    node = spec
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    return spec


@pytest.mark.parametrize("spec,needle", [
    (_with("manifest.weights_digest", "not-a-digest"), "manifest: manifest field weights_digest"),
    (_with("manifest.surprise", 1), "unknown manifest fields"),
    (_with("manifest.model_id", "someone/else"), "manifest.model_id must equal name"),
    (_with("manifest.chute_id", "other-chute"), "manifest.chute_id must be"),
    (_with("image_digest", "latest"), "image_digest must be"),
    (_with("image_digest", "sha256:" + "cd" * 32), "manifest.image_digest must equal"),
    (_with("prices.prompt_rao_per_mtok", -1), "prices.prompt_rao_per_mtok must be an integer"),
    (_with("prices.completion_rao_per_mtok", 0.5), "prices.completion_rao_per_mtok"),
    (_with("scaling.min_instances", 5), "min_instances must not exceed"),
    (_with("visibility", "secret"), "visibility must be"),
    (_with("allow", ["k_friend"]), "allow is only meaningful for a private chute"),
    (_with("name", "../etc"), "name must be"),
    (_with("hardware.gpu_count", -2), "hardware.gpu_count"),
    (_with("bogus", True), "unknown chute fields"),
    ("not an object", "must be an object"),
])
def test_bad_specs_are_refused_with_one_line(spec: object, needle: str) -> None:
    with pytest.raises(ChuteSpecError) as exc:
        parse_chute_spec(spec)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_chute_toml_round_trip(tmp_path: Path) -> None:
    toml = tmp_path / "chute.toml"
    toml.write_text(f'''name = "acme/model-b"
visibility = "private"
allow = ["k_friend"]
image_digest = "{IMAGE}"

[manifest]
model_id = "acme/model-b"
model_revision = "r1"
weights_digest = "sha256:{'11' * 32}"
tokenizer_digest = "sha256:{'22' * 32}"
engine = "vllm"
engine_version = "0.8.5"
image_digest = "{IMAGE}"
dtype = "bfloat16"
quantization = "none"
max_context = 32768

[scaling]
min_instances = 0
max_instances = 2
''')
    spec = load_chute_toml(toml)
    assert spec.visibility == "private" and spec.allow == ("k_friend",)
    assert spec.min_instances == 0 and spec.manifest["engine"] == "vllm"
    toml.write_text("name = [")
    with pytest.raises(ChuteSpecError, match="not valid TOML"):
        load_chute_toml(toml)
    with pytest.raises(ChuteSpecError, match="cannot read"):
        load_chute_toml(tmp_path / "missing.toml")


def test_deploy_update_retire_redeploy_are_versioned_and_audited(store: SQLChuteStore) -> None:
    spec = parse_chute_spec(chute_dict("acme/model-a"))
    first = store.deploy(spec, OWNER)
    assert (first.version, first.owner, first.retired) == (1, OWNER, False)
    assert store.deploy(spec, OWNER) == first  # same spec: nothing changes
    raised = parse_chute_spec(chute_dict("acme/model-a", prices={"prompt_rao_per_mtok": 20}))
    second = store.deploy(raised, OWNER)
    assert second.version == 2 and second.spec.prices.prompt_rao_per_mtok == 20
    retired = store.retire(spec.chute_id, OWNER)
    assert retired.retired and retired.version == 3
    assert store.published_manifests(spec.chute_id) == ()
    back = store.deploy(spec, OWNER)
    assert back.version == 4 and not back.retired
    assert [m.model_id for m in store.published_manifests(spec.chute_id)] == ["acme/model-a"]
    history = store.history(spec.chute_id)
    assert [(h.version, h.action, h.actor) for h in history] == [
        (1, "deploy", OWNER), (2, "update", OWNER), (3, "retire", OWNER), (4, "deploy", OWNER)]
    assert history[1].spec["prices"]["prompt_rao_per_mtok"] == 20


def test_only_the_owner_changes_a_chute_and_nothing_changes_otherwise(store) -> None:
    spec = parse_chute_spec(chute_dict("acme/model-a"))
    mine = store.deploy(spec, OWNER)
    hijack = parse_chute_spec(chute_dict("acme/model-a", prices={"prompt_rao_per_mtok": 0}))
    with pytest.raises(ChuteForbidden, match="owned by another key"):
        store.deploy(hijack, OTHER)
    with pytest.raises(ChuteForbidden):
        store.retire(spec.chute_id, OTHER)
    with pytest.raises(ChuteNotFound):
        store.retire(chute_id_for_model("nobody/nothing"), OWNER)
    assert store.get(spec.chute_id) == mine and len(store.history(spec.chute_id)) == 1


def test_visibility_rules() -> None:
    from chutes_subnet.registry.chutes import Chute

    spec = parse_chute_spec(chute_dict("acme/p", visibility="private", allow=["k_friend"]))
    chute = Chute(spec, OWNER, 1, False, 0.0, 0.0)
    assert chute.visible_to(OWNER) and chute.visible_to("k_friend")
    assert not chute.visible_to(OTHER) and not chute.visible_to(None)
    public = Chute(parse_chute_spec(chute_dict("acme/q")), OWNER, 1, False, 0.0, 0.0)
    assert public.visible_to(None)


def test_snapshot_cache_serves_reads_and_writes_refresh_it(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "c.db")
    reader, writer = SQLChuteStore(db, cache_seconds=60), SQLChuteStore(db, cache_seconds=60)
    assert reader.all() == []
    spec = parse_chute_spec(chute_dict("acme/model-a"))
    writer.deploy(spec, OWNER)
    assert writer.get(spec.chute_id) is not None
    assert reader.get(spec.chute_id) is None  # cached for up to cache_seconds elsewhere
    assert SQLChuteStore(db, cache_seconds=0).get(spec.chute_id) is not None
    db.close()
