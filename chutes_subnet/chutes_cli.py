"""``chutes-subnet chutes …``: deploy and manage chutes; scale a miner's fleet.

Application developers (an API key of the gateway)::

    chutes-subnet chutes deploy chute.toml     # create or update (a new version)
    chutes-subnet chutes list                  # the chutes this key may see, with targets
    chutes-subnet chutes show NAME|CHUTE_ID    # one chute, as JSON
    chutes-subnet chutes history NAME|CHUTE_ID # its audit log
    chutes-subnet chutes retire NAME|CHUTE_ID  # owner only

Miners::

    chutes-subnet chutes scale --fleet fleet.toml [--exec] [--once]

``--gateway`` (env ``CHUTES_GATEWAY``, default http://127.0.0.1:8787) and ``--api-key``
(env ``CHUTES_API_KEY``). Errors are one line on stderr with exit status 1.

``fleet.toml`` names the chutes this machine can run (its hardware fits them), its
running instances and the commands (argv lists, run without a shell) that start or
stop one::

    slots = 2                                   # instances this machine runs at once
    [[chutes]]
    name = "acme/llama-3-8b"
    instances = ["http://127.0.0.1:8091"]       # their /health gives the utilisation
    start = ["systemctl", "start", "chutes-miner@llama"]
    stop = ["systemctl", "stop", "chutes-miner@llama"]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx

__all__ = ["add_chutes_commands"]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIMEOUT = 15.0


class _Failed(Exception):
    """A one-line error for the operator."""


def _chute_id(ref: str) -> str:
    from chutes_subnet.wire.protocol import chute_id_for_model

    return ref if _UUID.fullmatch(ref) else chute_id_for_model(ref)


def _call(args: argparse.Namespace, method: str, path: str, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        r = httpx.request(method, args.gateway.rstrip("/") + path, headers=headers,
                          timeout=_TIMEOUT, trust_env=False, **kw)
    except httpx.HTTPError as exc:
        raise _Failed(f"gateway {args.gateway} unreachable ({type(exc).__name__})") from None
    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code >= 400:
        reason = body.get("error") if isinstance(body, dict) else None
        raise _Failed(f"HTTP {r.status_code}: {reason or 'request refused'}")
    return body


def _deploy(args: argparse.Namespace) -> Any:
    from chutes_subnet.registry.chutes import ChuteSpecError, load_chute_toml

    try:
        spec = load_chute_toml(args.file)
    except ChuteSpecError as exc:
        raise _Failed(f"{args.file}: {exc}") from None
    return _call(args, "POST", "/v1/chutes", json=spec.to_dict())


def _list(args: argparse.Namespace) -> Any:
    rows = _call(args, "GET", "/v1/chutes")["data"]
    return [{"name": c["name"], "chute_id": c["chute_id"], "version": c["version"],
             "visibility": c["visibility"], "retired": c["retired"], "target": c["target"]}
            for c in rows]


def _show(args: argparse.Namespace) -> Any:
    return _call(args, "GET", f"/v1/chutes/{_chute_id(args.chute)}")


def _history(args: argparse.Namespace) -> Any:
    return _call(args, "GET", f"/v1/chutes/{_chute_id(args.chute)}/history")


def _retire(args: argparse.Namespace) -> Any:
    return _call(args, "DELETE", f"/v1/chutes/{_chute_id(args.chute)}")


# --- the scaler ----------------------------------------------------------------------

def _load_fleet(path: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _Failed(f"{path}: cannot read the fleet file ({exc})".splitlines()[0]) from None
    slots, chutes = data.get("slots"), data.get("chutes", [])
    if not isinstance(slots, int) or isinstance(slots, bool) or not 0 <= slots <= 4096:
        raise _Failed(f"{path}: slots must be an integer 0..4096")
    if not isinstance(chutes, list):
        raise _Failed(f"{path}: chutes must be an array of tables")
    for i, c in enumerate(chutes):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise _Failed(f"{path}: chutes[{i}] needs a name")
        for key in ("start", "stop"):
            argv = c.get(key, [])
            if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                raise _Failed(f"{path}: chutes[{i}].{key} must be a list of strings")
        if not all(isinstance(u, str) for u in c.get("instances", [])):
            raise _Failed(f"{path}: chutes[{i}].instances must be a list of URLs")
    return data


def _utilization(urls: list[str]) -> tuple[int, float]:
    """(instances answering, their mean in_flight / capacity), read from each instance's
    private metrics port (``--metrics.port``, ``GET /metrics``): the public ``/health``
    gives only a coarse load bucket."""
    loads = []
    for url in urls:
        try:
            resp = httpx.get(url.rstrip("/") + "/metrics", timeout=5.0, trust_env=False)
            resp.raise_for_status()
            gauges = _gauges(resp.text[:1 << 20], ("chutes_miner_in_flight",
                                                   "chutes_miner_capacity"))
            in_flight, capacity = gauges["chutes_miner_in_flight"], gauges["chutes_miner_capacity"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError):
            continue
        loads.append(min(1.0, max(0.0, in_flight) / max(1.0, capacity)))
    return len(loads), (sum(loads) / len(loads) if loads else 0.0)


def _gauges(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """The values of unlabelled samples ``names`` in a Prometheus text exposition."""
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            found[name] = float(value.split()[0])
    return found


def _scale_tick(args: argparse.Namespace, fleet: dict[str, Any],
                last_change: dict[str, float]) -> list[dict[str, Any]]:
    from chutes_subnet.miner.scaler import FleetChute, ScalePolicy, plan_scaling

    path = "/v1/chutes" if args.api_key else "/v1/chutes/serving"
    published = {c["chute_id"]: c for c in _call(args, "GET", path)["data"]
                 if not c.get("retired") and c.get("target")}
    targets = {cid: (c["target"]["target"], c["target"]["current"])
               for cid, c in published.items()}
    mine, commands = {}, {}
    used = 0
    for entry in fleet["chutes"]:
        cid = _chute_id(entry["name"])
        running, load = _utilization(list(entry.get("instances", [])))
        used += running
        mine[cid] = FleetChute(cid, running, load, can_run=cid in published)
        commands[cid] = entry
    try:
        policy = ScalePolicy(args.up, args.down, args.cooldown)
    except ValueError as exc:
        raise _Failed(f"--up/--down: {exc}") from None
    now = time.time()
    actions = plan_scaling(targets, mine, free_slots=max(0, fleet["slots"] - used),
                           policy=policy, last_change=last_change, now=now)
    out = []
    for a in actions:
        argv = commands[a.chute_id].get(a.kind, [])
        row = {"action": a.kind, "chute": commands[a.chute_id]["name"], "chute_id": a.chute_id,
               "reason": a.reason, "command": argv, "executed": False}
        if args.exec and argv:
            try:
                done = subprocess.run(argv, timeout=120, check=False,  # noqa: S603 - the operator's
                                      capture_output=True)  # own scaler commands, no shell
            except (OSError, subprocess.TimeoutExpired) as exc:
                row["error"] = type(exc).__name__
            else:
                row["executed"], row["status"] = True, done.returncode
                if done.returncode == 0:
                    last_change[a.chute_id] = now
        out.append(row)
    return out


def _scale(args: argparse.Namespace) -> Any:
    fleet = _load_fleet(args.fleet)
    state = Path(args.state) if args.state else None
    last_change: dict[str, float] = {}
    if state is not None and state.is_file():
        try:
            last_change = {str(k): float(v) for k, v in json.loads(state.read_text()).items()}
        except (ValueError, AttributeError):
            last_change = {}
    while True:
        plan = _scale_tick(args, fleet, last_change)
        if state is not None:
            state.write_text(json.dumps(last_change))
        if args.once:
            return plan
        print(json.dumps(plan), flush=True)
        time.sleep(args.interval)


def _run(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            out = handler(args)
        except _Failed as exc:
            print(f"chutes: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    return run


def add_chutes_commands(subparsers: Any) -> None:
    """Register ``chutes`` and its subcommands."""
    p = subparsers.add_parser("chutes", help="deploy and manage chutes; scale a miner fleet")
    p.add_argument("--gateway", default=os.environ.get("CHUTES_GATEWAY", "http://127.0.0.1:8787"),
                   help="gateway URL [env CHUTES_GATEWAY]")
    p.add_argument("--api-key", default=os.environ.get("CHUTES_API_KEY"),
                   help="API key [env CHUTES_API_KEY]")
    sub = p.add_subparsers(dest="chutes_command", required=True, metavar="ACTION")
    d = sub.add_parser("deploy", help="deploy or update a chute from chute.toml")
    d.add_argument("file")
    d.set_defaults(func=_run(_deploy))
    sub.add_parser("list", help="chutes this key may see").set_defaults(func=_run(_list))
    for name, fn, text in (("show", _show, "one chute"), ("history", _history, "audit log"),
                           ("retire", _retire, "retire a chute (owner only)")):
        q = sub.add_parser(name, help=text)
        q.add_argument("chute", help="chute name or id")
        q.set_defaults(func=_run(fn))
    s = sub.add_parser("scale", help="start/stop this miner's instances to follow targets")
    s.add_argument("--fleet", required=True, help="fleet.toml (see the module doc)")
    s.add_argument("--exec", action="store_true", help="run the start/stop commands")
    s.add_argument("--once", action="store_true", help="one tick, then exit")
    s.add_argument("--interval", type=float, default=30.0, help="seconds between ticks")
    s.add_argument("--state", default=None, help="file keeping the last change per chute")
    s.add_argument("--up", type=float, default=0.75, help="start above this utilisation")
    s.add_argument("--down", type=float, default=0.25, help="stop below this utilisation")
    s.add_argument("--cooldown", type=float, default=120.0,
                   help="seconds before a chute is changed again")
    s.set_defaults(func=_run(_scale))
