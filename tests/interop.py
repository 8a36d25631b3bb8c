"""Run code inside a separate venv holding the public Chutes client (``chutes-e2ee`` 0.1.0).

That client needs the pre-1.0 ``pqcrypto`` API (``generate_keypair/encrypt/decrypt``)
while chutes-subnet uses pqcrypto 1.x, so the two cannot share one environment. The
venv is built once (cached under ``~/.cache/chutes-subnet/``, override with
``CHUTES_E2EE_VENV``) and snippets run in it as subprocesses exchanging JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import filelock

CLIENT_REQUIREMENTS = ["chutes-e2ee==0.1.0", "pqcrypto>=0.3,<1", "openai>=1.40", "httpx>=0.27,<1"]


def venv_dir() -> Path:
    env = os.environ.get("CHUTES_E2EE_VENV")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "chutes-subnet" / "chutes-e2ee-0.1.0-venv"


def venv_python() -> Path:
    """Path of the venv's interpreter, creating the venv on first use."""
    root = venv_dir()
    py = root / "bin" / "python"
    marker = root / ".ready"
    root.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(root) + ".lock", timeout=600):
        if not marker.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True, timeout=300)
            subprocess.run(
                [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *CLIENT_REQUIREMENTS],
                check=True,
                timeout=600,
            )
            marker.write_text("ok\n")
    return py


def run_client(code: str, data: Any = None, timeout: float = 60.0) -> Any:
    """Run ``code`` in the client venv. It reads ``DATA`` (parsed JSON) and must set ``RESULT``."""
    prog = "import json, sys\nDATA = json.loads(sys.stdin.read())\nRESULT = None\n"
    prog += textwrap.dedent(code)
    prog += "\nsys.stdout.write(json.dumps(RESULT))\n"
    proc = subprocess.run(
        [str(venv_python()), "-c", prog],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"public client snippet failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)
