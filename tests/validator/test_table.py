"""The score table and the ``scores`` command that prints it."""

from __future__ import annotations

import json

from chutes_subnet.validator import (
    MinerResult,
    RoundReport,
    ScoreEntry,
    ValidatorState,
    build_score_table,
    format_score_table,
)
from chutes_subnet.validator.cli import main as cli_main
from tests.validator_fixtures import round_report, score_entries

SEED = bytes(range(32))


def test_score_table_and_scores_command(tmp_path, capsys):
    path = tmp_path / "s.sqlite"
    state = ValidatorState(path)
    report = round_report(4, {1: 0.4, 2: 0.0}, {1: 1.0})
    failed = MinerResult(2, "hk2", "ck2", None, False, reason="attestation:debug_td")
    report = RoundReport(4, 104, 0.0, 1.0, (report.results[0], failed), {}, {}, {1: 1.0},
                         None)
    state.commit_round(report, score_entries({1: 0.4, 2: 0.0}), SEED)
    rows = build_score_table(state.load())
    state.close()
    assert [(r.uid, r.attested, r.reason, r.weight) for r in rows] == [
        (1, True, None, 1.0), (2, False, "attestation:debug_td", 0.0)]
    text = format_score_table(rows, round_index=4)
    assert "round 4" in text and "attestation:debug_td" in text and "weights sum 1.0000" in text
    assert cli_main(["scores", "--state.path", str(path)]) == 0
    assert "attestation:debug_td" in capsys.readouterr().out
    assert cli_main(["scores", "--state.path", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["uid"] == 1
    assert cli_main(["scores", "--state.path", str(tmp_path / "missing.sqlite")]) == 1


def test_stale_result_of_previous_hotkey_is_hidden():
    from chutes_subnet.validator import StateSnapshot

    snap = StateSnapshot(3, 10, {1: ScoreEntry("new", "c", 0.0)}, {},
                         {1: {"hotkey": "old", "attested": True, "tokens_per_s": 99.0}}, None)
    row = build_score_table(snap)[0]
    assert row.hotkey == "new" and not row.attested and row.tokens_per_s == 0.0
