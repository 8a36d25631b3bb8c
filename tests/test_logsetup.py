"""JSON log lines on stderr and in a private file under --logging.logging_dir (issue 17,
"Operations")."""

from __future__ import annotations

import json
import logging
import stat

from chutes_subnet.logsetup import setup_logging


def test_json_logs_go_to_stderr_and_a_private_file(tmp_path, capsys):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging(json_lines=True, logging_dir=str(tmp_path / "logs"), name="miner")
        logging.getLogger("chutes_subnet.test").warning("hello %s", "operator")
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            if handler not in saved[0]:
                handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["msg"] == "hello operator" and line["level"] == "WARNING"
    assert line["logger"] == "chutes_subnet.test" and line["ts"].endswith("Z")
    path = tmp_path / "logs" / "miner.log"
    assert json.loads(path.read_text().splitlines()[-1])["msg"] == "hello operator"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
