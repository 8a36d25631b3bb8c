"""The fleet manifests render and validate offline: ``kubectl kustomize`` (Kustomize v5,
built into kubectl) renders each variant, ``kubernetes-validate`` checks every object
against the Kubernetes OpenAPI schemas (strict: unknown fields fail), and the checks
below hold what the schemas cannot: the engine stays on loopback inside the pod (the
TD), readiness comes from the miner's ``/ready``, every CHUTES_MINER_* variable is a
real miner flag. The one-host docker-compose fleet gets the same checks (no Docker
needed): distinct ports, hotkeys and GPU sets."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from chutes_subnet.miner.cli import build_parser, env_name

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose" / "miner-fleet.yml"
VARIANTS = ["base", "overlays/vllm", "overlays/sglang"]


def _miner_env_names() -> set[str]:
    flags = {opt for a in build_parser()._actions for opt in a.option_strings
             if opt.startswith("--")}
    return {env_name(f) for f in flags}


def render(variant: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with built-in Kustomize v5) is needed to render deploy/k8s"
    out = subprocess.run([kubectl, "kustomize", str(K8S / variant)], check=True,
                         capture_output=True, text=True, timeout=120)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _engine_port(args: list[str]) -> int | None:
    for a in args:
        if a.startswith("--port="):
            return int(a.split("=", 1)[1])
    return None


def fleet_problems(docs: list[dict[str, Any]]) -> list[str]:
    """What is wrong with a rendered miner fleet (empty when fine)."""
    problems = []
    by_kind = {d["kind"]: d for d in docs}
    config = by_kind["ConfigMap"]["data"]
    known = _miner_env_names()
    problems += [f"{k} is not a miner flag" for k in config
                 if k.startswith("CHUTES_MINER_") and k not in known]
    pod = by_kind["StatefulSet"]["spec"]["template"]
    spec = pod["spec"]
    if spec.get("runtimeClassName") != "kata-qemu-tdx":
        problems.append("pods must run in a TD (runtimeClassName kata-qemu-tdx)")
    containers = {c["name"]: c for c in spec["containers"]}
    miner = containers["miner"]
    port = {p["name"]: p["containerPort"] for p in miner["ports"]}.get("axon")
    if port != int(config["CHUTES_MINER_AXON_PORT"]):
        problems.append("the axon port differs from CHUTES_MINER_AXON_PORT")
    probe = miner.get("readinessProbe", {}).get("httpGet", {})
    if probe.get("path") != "/ready" or probe.get("port") not in ("axon", port):
        problems.append("readiness must come from the miner's /ready")
    ann = pod["metadata"].get("annotations", {})
    metrics = {p["name"]: p for p in miner["ports"]}.get("metrics", {})
    if ann.get("prometheus.io/path") != "/metrics" \
            or ann.get("prometheus.io/port") != config.get("CHUTES_MINER_METRICS_PORT") \
            or str(metrics.get("containerPort")) != config.get("CHUTES_MINER_METRICS_PORT"):
        problems.append("metrics scraping must point at the miner's metrics port")
    if "hostPort" in metrics:
        problems.append("the metrics port must not be published on the host")
    problems += [f"env {e['name']} is not a miner flag" for e in miner.get("env", [])
                 if e["name"].startswith("CHUTES_MINER_") and e["name"] not in known]
    if not all(m.get("readOnly") for m in miner["volumeMounts"] if m["name"] == "wallet"):
        problems.append("the hotkey must be mounted read-only")
    engine = containers.get("engine")
    if engine is not None:
        if engine.get("ports"):
            problems.append("the engine must not expose ports outside the pod")
        args = engine.get("args", [])
        if "--host=127.0.0.1" not in args:
            problems.append("the engine must listen on loopback only")
        upstream = urlsplit(config.get("CHUTES_MINER_BACKEND_URL", ""))
        if config.get("CHUTES_MINER_BACKEND") != "openai" or upstream.hostname != "127.0.0.1" \
                or upstream.port != _engine_port(args):
            problems.append("the miner must reach the engine on loopback at its port")
    return problems


@pytest.mark.parametrize("variant", VARIANTS)
def test_manifests_render_and_validate(variant: str) -> None:
    docs = render(variant)
    assert {d["kind"] for d in docs} == {"Namespace", "ConfigMap", "Service", "StatefulSet",
                                        "PodDisruptionBudget"}
    version = kubernetes_validate.latest_version()
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises on a schema error
    assert fleet_problems(docs) == []


def test_engine_variants_keep_the_engine_in_the_pod() -> None:
    for variant, port in (("overlays/vllm", 8000), ("overlays/sglang", 30000)):
        docs = render(variant)
        pod = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]
        names = [c["name"] for c in pod["containers"]]
        assert sorted(names) == ["engine", "miner"]
        engine = next(c for c in pod["containers"] if c["name"] == "engine")
        miner = next(c for c in pod["containers"] if c["name"] == "miner")
        assert _engine_port(engine["args"]) == port
        assert engine["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert "nvidia.com/gpu" not in miner["resources"]["limits"]


def test_the_checks_catch_broken_fleets() -> None:
    docs = render("overlays/vllm")
    breakages = {
        "the engine must listen on loopback only":
            lambda c, s: s["containers"][[x["name"] for x in s["containers"]].index("engine")]
            .__setitem__("args", ["--host=0.0.0.0", "--port=8000"]),
        "pods must run in a TD (runtimeClassName kata-qemu-tdx)":
            lambda c, s: s.pop("runtimeClassName"),
        "CHUTES_MINER_MAX_CONCURENCY is not a miner flag":
            lambda c, s: c.__setitem__("CHUTES_MINER_MAX_CONCURENCY", "8"),
        "readiness must come from the miner's /ready":
            lambda c, s: next(x for x in s["containers"] if x["name"] == "miner")
            ["readinessProbe"]["httpGet"].__setitem__("path", "/health"),
    }
    for expected, breaks in breakages.items():
        broken = copy.deepcopy(docs)
        config = next(d for d in broken if d["kind"] == "ConfigMap")["data"]
        spec = next(d for d in broken if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]
        breaks(config, spec)
        assert expected in fleet_problems(broken)


def compose_problems(doc: dict[str, Any]) -> list[str]:
    """What is wrong with a one-host compose fleet (empty when fine)."""
    problems = []
    known = _miner_env_names()
    services = doc["services"]
    miners = {n: s for n, s in services.items() if n.startswith("miner-")}
    engines = {n: s for n, s in services.items() if n.startswith("engine-")}
    ports, hotkeys, gpus = [], [], []
    for name, svc in miners.items():
        env = svc["environment"]
        problems += [f"{name}: {k} is not a miner flag" for k in env
                     if k.startswith("CHUTES_MINER_") and k not in known]
        port = env["CHUTES_MINER_AXON_PORT"]
        if svc.get("ports") != [f"{port}:{port}"]:
            problems.append(f"{name}: published port differs from its axon port")
        ports.append(port)
        hotkeys.append(env["CHUTES_MINER_WALLET_HOTKEY"])
    for name, svc in engines.items():
        front = svc.get("network_mode", "").removeprefix("service:")
        if front not in miners:
            problems.append(f"{name}: must share a miner's network namespace")
        cmd = svc["command"]
        if cmd[cmd.index("--host") + 1] != "127.0.0.1":
            problems.append(f"{name}: must listen on loopback only")
        for dev in svc["deploy"]["resources"]["reservations"]["devices"]:
            gpus += dev["device_ids"]
    for what, values in (("ports", ports), ("hotkeys", hotkeys), ("GPUs", gpus)):
        if len(values) != len(set(values)):
            problems.append(f"instances share {what}")
    return problems


def test_compose_fleet_is_consistent() -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert len([s for s in doc["services"] if s.startswith("miner-")]) >= 2
    assert compose_problems(doc) == []
    broken = copy.deepcopy(doc)
    broken["services"]["engine-1"]["deploy"]["resources"]["reservations"]["devices"][0][
        "device_ids"] = ["3", "4"]
    broken["services"]["miner-1"]["environment"]["CHUTES_MINER_WALLET_HOTKEY"] = "miner-0"
    assert compose_problems(broken) == ["instances share hotkeys", "instances share GPUs"]
