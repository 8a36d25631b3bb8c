#!/usr/bin/env bash
# Dependency audit: pip-audit over chutes-subnet's installed dependency closure.
#
#   bash scripts/audit.sh            # install_requires + the dev extra, transitively
#   bash scripts/audit.sh --direct   # only the packages setup.py names
#
# Versions are pinned to what is installed (the closure is read from installed package
# metadata, no resolver runs), then pip-audit checks each pin against PyPI's advisory
# data. Accepted advisories live in .ci/audit-allowlist.txt (ID, expiry date, reason).
#
# Prints a table and one JSON line. Exit status:
#   0  no unaccepted advisory, or the advisory DB could not be reached — then the last
#      lines say "skipped: advisory DB unreachable" (never a silent pass)
#   1  vulnerable dependencies    2  the audit could not run (pip-audit missing, ...)
set -uo pipefail
cd "$(dirname "$0")/.."

MODE="${1:---closure}"
ALLOWLIST="${AUDIT_ALLOWLIST:-.ci/audit-allowlist.txt}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if ! python -m pip_audit --version >/dev/null 2>&1; then
  echo "audit: pip-audit is not installed (pip install -e '.[dev]')" >&2
  exit 2
fi

# 1. pinned requirements of the project (and, by default, everything they pull in)
python - "$MODE" > "$WORK/requirements.txt" <<'PY' || exit 2
import sys
from importlib import metadata
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

mode = sys.argv[1]
try:
    roots = metadata.requires("chutes-subnet") or []
except metadata.PackageNotFoundError:
    sys.exit("audit: chutes-subnet is not installed (pip install -e '.[dev]')")
todo = [r for r in map(Requirement, roots)
        if r.marker is None or r.marker.evaluate({"extra": "dev"})]
pins = {}
while todo:
    req = todo.pop()
    name = canonicalize_name(req.name)
    if name in pins:
        continue
    try:
        dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
        continue  # optional dependency not installed here: nothing to audit
    pins[name] = dist.version
    if mode != "--direct":
        for sub in map(Requirement, dist.requires or []):
            if sub.marker is None or sub.marker.evaluate({"extra": ""}):
                todo.append(sub)
for name in sorted(pins):
    print(f"{name}=={pins[name]}")
PY

# 2. allowlist: IDs whose date has not passed
IGNORES=()
while read -r id until _; do
  case "$id" in ''|'#'*) continue ;; esac
  date="${until#until=}"
  if [[ "$date" < "$(date -u +%F)" ]]; then
    echo "audit: allowlist entry $id expired on $date; it no longer applies" >&2
    continue
  fi
  IGNORES+=(--ignore-vuln "$id")
done < <(cat "$ALLOWLIST" 2>/dev/null)

# 3. the audit itself
python -m pip_audit -r "$WORK/requirements.txt" --no-deps --disable-pip \
  --progress-spinner off --timeout 20 -f json -o "$WORK/report.json" \
  "${IGNORES[@]}" >"$WORK/stdout" 2>"$WORK/stderr"
RC=$?

# 4. verdict
python - "$WORK" "$RC" "$(wc -l < "$WORK/requirements.txt")" "${#IGNORES[@]}" <<'PY'
import json, sys
from pathlib import Path

work, rc, pinned, ignored = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) // 2
err = (work / "stderr").read_text(errors="replace")
try:
    report = json.loads((work / "report.json").read_text())
except (OSError, ValueError):
    report = None
deps = report.get("dependencies", []) if isinstance(report, dict) else []
unreachable_words = ("ConnectionError", "NameResolution", "Max retries", "timed out",
                     "Temporary failure", "ProxyError", "SSLError")
skipped = [d for d in deps if "skip_reason" in d]
not_found = [d for d in skipped if "not found on PyPI" in d["skip_reason"]]
summary = {"pinned": pinned, "audited": len(deps) - len(skipped), "skipped": len(skipped),
           "allowlisted_ids": ignored}
if (report is None and any(w in err for w in unreachable_words)) or \
        (deps and len(not_found) == len(deps)):
    summary["status"] = "skipped: advisory DB unreachable"
    print(json.dumps(summary, separators=(",", ":")))
    print("skipped: advisory DB unreachable (no dependency could be checked; this is NOT a pass)")
    sys.exit(0)
if report is None:
    print(err[-2000:], file=sys.stderr)
    print("audit: pip-audit failed without a report", file=sys.stderr)
    sys.exit(2)
vulnerable = [(d["name"], d["version"], v["id"], ",".join(v.get("fix_versions", [])) or "-")
              for d in deps for v in d.get("vulns", [])]
print(f"{'package':28} {'version':12} {'advisory':22} fixed in")
for row in vulnerable:
    print(f"{row[0]:28} {row[1]:12} {row[2]:22} {row[3]}")
for d in skipped:
    print(f"{d['name']:28} {d.get('version', '?'):12} {'(not audited)':22} {d['skip_reason'][:60]}")
summary.update(status="vulnerable" if vulnerable else "ok", advisories=len(vulnerable))
print(json.dumps(summary, separators=(",", ":")))
sys.exit(1 if vulnerable else 0)
PY
