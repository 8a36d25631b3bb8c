"""Workload identity: manifest schema and hash, Merkle digests, RTMR3 event-log replay.

The replay and the digest rule are checked on a real dstack TD quote and the real
event log it published (tests/data/vectors/tdx-eventlog).
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from chutes_subnet.attestation.model_files import directory_digest, tokenizer_digest
from chutes_subnet.attestation.verify.eventlog import (
    RUNTIME_EVENT_TYPE,
    EventLogError,
    RuntimeEvent,
    event_digest,
    expected_rtmr3,
    parse_event_log,
    replay,
    workload_event,
)
from chutes_subnet.attestation.verify.manifest import (
    ManifestError,
    WorkloadManifest,
    load_manifest,
    parse_manifest,
)
from chutes_subnet.attestation.verify.merkle import merkle_digest, merkle_root
from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.attestation.verify.reasons import ReasonCode
from chutes_subnet.attestation.verify.workload_check import StaticManifestSource, check_workload
from tests.vector_files import VECTORS_DIR

EVENTLOG = VECTORS_DIR / "tdx-eventlog"
D = "sha256:" + "ab" * 32


def manifest(**over) -> WorkloadManifest:
    fields = {"chute_id": "c-1", "model_id": "org/model", "model_revision": "abc123",
                  "weights_digest": D, "tokenizer_digest": D, "engine": "vllm", "engine_version": "0.8.5",
                  "image_digest": D, "dtype": "bfloat16", "quantization": "none", "max_context": 32768}
    fields.update(over)
    return WorkloadManifest(**fields)


@pytest.fixture(scope="module")
def dstack() -> tuple[dict, bytes]:
    info = json.loads((EVENTLOG / "tcb_info.json").read_text())
    quote = bytes(json.loads((EVENTLOG / "quote.json").read_text()))
    return info, quote


# --- manifest -----------------------------------------------------------------------

def test_manifest_canonical_bytes_and_hash():
    m = manifest()
    raw = m.canonical_bytes()
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    assert raw.startswith(b'{"chute_id":"c-1","dtype":"bfloat16"')
    assert m.sha384() == hashlib.sha384(raw).digest()
    # key order and whitespace of the input do not matter; values do
    shuffled = json.dumps(dict(reversed(list(m.to_dict().items()))), indent=2)
    assert parse_manifest(shuffled) == m
    assert manifest(max_context=32769).sha384() != m.sha384()


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.update(extra=1), "unknown manifest fields: ['extra']"),
    (lambda d: d.pop("dtype"), "missing manifest fields: ['dtype']"),
    (lambda d: d.update(weights_digest="sha256:" + "AB" * 32), "weights_digest"),
    (lambda d: d.update(max_context=True), "max_context"),
    (lambda d: d.update(max_context=0), "max_context"),
    (lambda d: d.update(version=2), "version"),
    (lambda d: d.update(chute_id="a/b"), "chute_id"),
    (lambda d: d.update(model_id="x" * 129), "model_id"),
    (lambda d: d.update(model_revision="tab\there"), "model_revision"),
    (lambda d: d.update(engine=["vllm"]), "engine"),
])
def test_manifest_refuses_bad_fields(mutate, needle):
    d = manifest().to_dict()
    mutate(d)
    with pytest.raises(ManifestError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        WorkloadManifest.from_dict(d)


@pytest.mark.parametrize("raw", [b"", b"[]", b"{", b'{"a": NaN}', b"x" * 5000, b"\xff"])
def test_parse_manifest_refuses_non_objects(raw):
    with pytest.raises(ManifestError):
        parse_manifest(raw)


def test_load_manifest(tmp_path):
    path = tmp_path / "m.json"
    path.write_bytes(manifest().canonical_bytes())
    assert load_manifest(path) == manifest()
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(tmp_path / "missing.json")


# --- Merkle digests -------------------------------------------------------------------

def test_merkle_root_shape_is_rfc6962():
    leaves = [(f"f{i}", i, hashlib.sha256(bytes([i])).digest()) for i in range(3)]
    from chutes_subnet.attestation.verify.merkle import leaf_hash
    a, b, c = (leaf_hash(*leaf) for leaf in leaves)
    ab = hashlib.sha256(b"\x01" + a + b).digest()
    assert merkle_root(leaves) == hashlib.sha256(b"\x01" + ab + c).digest()
    assert merkle_root(leaves[:1]) == a
    assert merkle_root(reversed(leaves)) == merkle_root(leaves)  # order is by path
    with pytest.raises(Exception, match="at least one file"):
        merkle_root([])
    with pytest.raises(Exception, match="duplicate path"):
        merkle_root([leaves[0], leaves[0]])


def test_directory_digest_binds_names_sizes_and_content(tmp_path):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "w.safetensors").write_bytes(b"\x01" * 3000)
    (model / "tokenizer.json").write_text('{"v": 1}')
    (model / ".cache").mkdir()
    (model / ".cache" / "lock").write_text("ignored")
    base = directory_digest(model)
    assert base == merkle_digest([("config.json", b"{}"), ("sub/w.safetensors", b"\x01" * 3000),
                                  ("tokenizer.json", b'{"v": 1}')])
    assert tokenizer_digest(model) == merkle_digest([("tokenizer.json", b'{"v": 1}')])
    (model / ".cache" / "lock").write_text("changed")  # dot paths do not count
    assert directory_digest(model) == base
    # a symlinked file (Hugging Face snapshot layout) counts as its target's content
    blob = tmp_path / "blob"
    blob.write_bytes(b"\x01" * 3000)
    os.remove(model / "sub" / "w.safetensors")
    os.symlink(blob, model / "sub" / "w.safetensors")
    assert directory_digest(model) == base
    blob.write_bytes(b"\x02" * 3000)
    assert directory_digest(model) != base
    os.rename(model / "config.json", model / "config2.json")
    assert directory_digest(model) not in (base,)
    os.symlink(tmp_path / "nowhere", model / "dangling")
    with pytest.raises(Exception, match="not a regular file"):
        directory_digest(model)
    with pytest.raises(Exception, match="does not exist"):
        directory_digest(tmp_path / "absent")


# --- event log on the real dstack vector ----------------------------------------------

def test_real_dstack_log_replays_to_the_quote_rtmr3(dstack):
    info, quote = dstack
    events = parse_event_log(info["event_log"])
    rtmr3 = parse_quote(quote).report.rtmr[3]
    assert rtmr3.hex() == info["rtmr3"]
    assert replay(events) == rtmr3
    imr3 = [e for e in events if e.imr == 3]
    assert len(imr3) == 9 and all(e.follows_digest_rule for e in imr3)
    assert all(e.event_type == RUNTIME_EVENT_TYPE for e in imr3)
    compose = next(e for e in imr3 if e.name == "compose-hash")
    app_compose = (EVENTLOG / "app_compose.json").read_bytes()
    assert compose.payload == hashlib.sha256(app_compose).digest()
    assert compose.payload.hex() == info["compose_hash"]


def test_real_dstack_log_every_edit_breaks_the_replay(dstack):
    info, quote = dstack
    rtmr3 = parse_quote(quote).report.rtmr[3]
    imr3 = [e for e in parse_event_log(info["event_log"]) if e.imr == 3]
    edits = {
        "reordered": [imr3[1], imr3[0], *imr3[2:]],
        "truncated": imr3[:-1],
        "dropped": imr3[:3] + imr3[4:],
        "extra": [*imr3, RuntimeEvent.runtime("extra", b"")],
    }
    for name, events in edits.items():
        assert replay(events) != rtmr3, name
    edited = RuntimeEvent(3, imr3[2].event_type, imr3[2].digest, imr3[2].name, b"\x00" * 32)
    assert not edited.follows_digest_rule


def test_digest_rule_literal():
    assert event_digest(0x08000001, "app-id", b"\x01") == hashlib.sha384(
        b"\x01\x00\x00\x08:app-id:\x01").digest()


@pytest.mark.parametrize("log, needle", [
    ({}, "list"),
    ([{}], "exactly"),
    ([{"imr": 4, "event_type": 1, "digest": "00" * 48, "event": "", "event_payload": ""}], "imr"),
    ([{"imr": 3, "event_type": -1, "digest": "00" * 48, "event": "", "event_payload": ""}],
     "event_type"),
    ([{"imr": 3, "event_type": 1, "digest": "00" * 47, "event": "", "event_payload": ""}],
     "48 bytes"),
    ([{"imr": 3, "event_type": 1, "digest": "zz" * 48, "event": "", "event_payload": ""}], "hex"),
    ([{"imr": 3, "event_type": 1, "digest": "00" * 48, "event": "\n", "event_payload": ""}],
     "printable"),
    ([{"imr": 3, "event_type": 1, "digest": "00" * 48, "event": "", "event_payload": "0"}], "hex"),
    ([{"imr": 3, "event_type": 1, "digest": "00" * 48, "event": "", "event_payload": "00",
       "x": 1}], "exactly"),
    ([], None),
])
def test_parse_event_log_is_strict(log, needle):
    if needle is None:
        assert parse_event_log(log) == ()
        return
    with pytest.raises(EventLogError, match=needle):
        parse_event_log(log)


def test_parse_event_log_bounds():
    e = RuntimeEvent.runtime("x", b"").to_wire()
    assert len(parse_event_log([e] * 256)) == 256
    with pytest.raises(EventLogError):
        parse_event_log([e] * 257)
    with pytest.raises(EventLogError):
        parse_event_log([RuntimeEvent.runtime("x", b"\x00" * 8193).to_wire()])


# --- the verifier's workload step -----------------------------------------------------

def _wire(events):
    return [e.to_wire() for e in events]


def test_check_workload_accepts_the_published_release():
    m = manifest()
    prefix = [RuntimeEvent.runtime("boot", b"\x01")]
    log = [*prefix, workload_event(m)]
    out = check_workload(_wire(log), m.to_dict(), expected_rtmr3(m, prefix), "c-1",
                         StaticManifestSource([m]))
    assert out.reason is None and out.manifest == m


def _code(m, log, rtmr3, chute="c-1", published=None, manifest_wire=None):
    source = StaticManifestSource([m] if published is None else published)
    out = check_workload(_wire(log), m.to_dict() if manifest_wire is None else manifest_wire,
                         rtmr3, chute, source)
    return out.reason.code if out.reason else None


def test_check_workload_reason_codes():
    m = manifest()
    other = manifest(model_revision="def456")
    ev = workload_event(m)
    good = expected_rtmr3(m)
    boot = RuntimeEvent.runtime("boot", b"")
    assert _code(m, [ev], good) is None
    assert _code(m, [boot, ev], good) == ReasonCode.EVENT_LOG_REPLAY_MISMATCH  # extra event
    assert _code(m, [], good) == ReasonCode.EVENT_LOG_REPLAY_MISMATCH  # truncated
    assert _code(m, [ev, boot], replay([boot, ev])) == ReasonCode.EVENT_LOG_REPLAY_MISMATCH
    assert _code(m, [boot], replay([boot])) == ReasonCode.WORKLOAD_EVENT_MISSING
    two = [ev, workload_event(other)]
    assert _code(m, two, replay(two)) == ReasonCode.WORKLOAD_EVENT_DUPLICATE
    forged = RuntimeEvent(3, ev.event_type, ev.digest, ev.name, other.sha384())
    assert _code(m, [forged], good) == ReasonCode.EVENT_LOG_DIGEST_MISMATCH
    assert _code(m, [ev], good, manifest_wire={**m.to_dict(), "x": 1}) == ReasonCode.MANIFEST_FORMAT
    assert _code(m, [ev], good, manifest_wire=None) is None
    assert _code(m, [ev], good, manifest_wire=other.to_dict()) == ReasonCode.MANIFEST_NOT_MEASURED
    assert _code(m, [ev], good, chute="c-2") == ReasonCode.MANIFEST_WRONG_CHUTE
    assert _code(m, [ev], good, chute=None) == ReasonCode.MANIFEST_WRONG_CHUTE
    assert _code(m, [ev], good, published=[other]) == ReasonCode.MANIFEST_NOT_PUBLISHED
    assert _code(m, [ev], good, published=[]) == ReasonCode.MANIFEST_NOT_PUBLISHED
    out = check_workload("not a list", m.to_dict(), good, "c-1", None)
    assert out.reason.code == ReasonCode.EVENT_LOG_FORMAT


def test_check_workload_development_skips_only_publication():
    m = manifest()
    out = check_workload(_wire([workload_event(m)]), m.to_dict(), expected_rtmr3(m), "c-1",
                         StaticManifestSource(), require_published=False)
    assert out.reason is None and out.manifest == m
    out = check_workload(_wire([workload_event(m)]), m.to_dict(), expected_rtmr3(m), "c-1",
                         StaticManifestSource([manifest(model_revision="zz")]),
                         require_published=False)
    assert out.reason.code == ReasonCode.MANIFEST_NOT_PUBLISHED


def test_real_dstack_log_through_the_workload_step(dstack):
    """The real quote's log replays; it measures no chutes workload, so it is refused."""
    info, quote = dstack
    rtmr3 = parse_quote(quote).report.rtmr[3]
    out = check_workload(info["event_log"], manifest().to_dict(), rtmr3, "c-1",
                         StaticManifestSource([manifest()]))
    assert out.reason.code == ReasonCode.WORKLOAD_EVENT_MISSING
    edited = [dict(e) for e in info["event_log"]]
    i = next(i for i, e in enumerate(edited) if e["event"] == "compose-hash")
    edited[i]["event_payload"] = "00" * 32
    out = check_workload(edited, manifest().to_dict(), rtmr3, "c-1", None)
    assert out.reason.code == ReasonCode.EVENT_LOG_DIGEST_MISMATCH
