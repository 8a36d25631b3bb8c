"""The validator's state file: round commits are atomic; corrupt or newer files are refused."""

from __future__ import annotations

import sqlite3

import pytest

from chutes_subnet.validator import ValidatorState, ValidatorStateError
from tests.validator_fixtures import round_report, score_entries

SEED = bytes(range(32))


def test_state_roundtrip(tmp_path):
    state = ValidatorState(tmp_path / "s.sqlite")
    assert state.load().round_index == 0 and state.load().scores == {}
    state.commit_round(round_report(1, {1: 0.4, 2: 0.1}, {1: 0.8, 2: 0.2}),
                       score_entries({1: 0.4, 2: 0.1}), SEED)
    state.close()
    snap = ValidatorState(tmp_path / "s.sqlite").load()
    assert snap.round_index == 1 and snap.last_block == 101 and snap.last_weights_block == 101
    assert snap.scores == score_entries({1: 0.4, 2: 0.1})
    assert snap.weights == {1: 0.8, 2: 0.2}
    assert snap.results[1]["tokens_per_s"] == 10.0


def test_failed_commit_leaves_previous_round(tmp_path, monkeypatch):
    state = ValidatorState(tmp_path / "s.sqlite")
    state.commit_round(round_report(1, {1: 0.4}, {1: 1.0}), score_entries({1: 0.4}), SEED)
    before = state.load()
    import chutes_subnet.validator.state as state_mod

    def boom(*_a, **_k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(state_mod.json, "dumps", boom)  # fails after the DELETEs ran
    with pytest.raises(RuntimeError):
        state.commit_round(round_report(2, {1: 0.9, 3: 0.5}, {1: 0.6, 3: 0.4}),
                           score_entries({1: 0.9, 3: 0.5}), SEED)
    monkeypatch.undo()
    assert state.load() == before


def test_corrupt_or_foreign_state_is_refused(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    with pytest.raises(ValidatorStateError):
        ValidatorState(bad)
    newer = tmp_path / "newer.sqlite"
    ValidatorState(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(ValidatorStateError, match="schema 99"):
        ValidatorState(newer)
