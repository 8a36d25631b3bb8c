"""``chutes-subnet measure``: what a workload release measures, so nobody copies hex.

    chutes-subnet measure manifest.json            manifest SHA-384, the RTMR3 a TD
                                                   measuring it reports, the policy table
    chutes-subnet measure manifest.json --after events.json
                                                   RTMR3 when other runtime events (e.g. a
                                                   dstack TD's) precede the workload event
    chutes-subnet measure --model-dir DIR          weights_digest and tokenizer_digest of
                                                   an engine's model directory
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_measure_commands", "manifest_toml", "measure"]


def manifest_toml(manifest: Any) -> str:
    """The ``[[manifests]]`` table of a policy file for ``manifest``."""
    lines = ["[[manifests]]"]
    for key, value in sorted(manifest.to_dict().items()):
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines)


def measure(args: argparse.Namespace) -> int:
    """Print the measurements (see module doc); 1 with a one-line error on bad input."""
    from chutes_subnet.errors import AttestationError

    from .model_files import directory_digest, tokenizer_digest
    from .verify.eventlog import expected_rtmr3, parse_event_log, workload_event
    from .verify.manifest import load_manifest

    try:
        if args.model_dir:
            out: dict[str, Any] = {"weights_digest": directory_digest(args.model_dir),
                                   "tokenizer_digest": tokenizer_digest(args.model_dir)}
            print(json.dumps(out, indent=2) if args.json else
                  "\n".join(f"{k} = {json.dumps(v)}" for k, v in out.items()))
            return 0
        if not args.manifest:
            print("measure: give a manifest file or --model-dir", file=sys.stderr)
            return 2
        manifest = load_manifest(args.manifest)
        before = parse_event_log(json.loads(Path(args.after).read_text())) if args.after else ()
    except (AttestationError, OSError, ValueError) as exc:
        print(f"measure: {exc}", file=sys.stderr)
        return 1
    rtmr3 = expected_rtmr3(manifest, [e for e in before if e.imr == 3])
    event = workload_event(manifest)
    if args.json:
        print(json.dumps({"manifest_sha384": manifest.sha384().hex(), "rtmr3": rtmr3.hex(),
                          "event": event.to_wire(), "manifest": manifest.to_dict()}, indent=2))
        return 0
    print(f"manifest_sha384 = {manifest.sha384().hex()}")
    print(f"rtmr3           = {rtmr3.hex()}")
    print(f"event digest    = {event.digest.hex()}")
    print("\n# policy file entry:")
    print(manifest_toml(manifest))
    return 0


def add_measure_commands(subparsers: Any) -> None:
    """Register ``measure``."""
    p = subparsers.add_parser("measure", help="RTMR3 and digests of a workload release")
    p.add_argument("manifest", nargs="?", help="workload manifest JSON")
    p.add_argument("--after", help="JSON list of runtime events extended before the workload")
    p.add_argument("--model-dir", dest="model_dir", help="print the digests of a model directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=measure)
