"""The fleet manifests render and validate offline: ``kubectl kustomize`` (Kustomize v5,
built into kubectl) renders each variant, ``kubernetes-validate`` checks every object
against the Kubernetes OpenAPI schemas (strict: unknown fields fail), and the checks
below hold what the schemas cannot: the engine stays on loopback inside the pod (the
TD), readiness comes from the miner's ``/ready``, every CHUTES_MINER_* variable is a
real miner flag. The one-host docker-compose fleet gets the same checks (no Docker
needed): distinct ports and GPU sets, one front per hotkey listing every sibling. The
one-hotkey Kubernetes fleet (overlays/fleet): its front is one of the pods, every pod
names itself, siblings are listed at the axon port."""

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
from chutes_subnet.wire.protocol import MAX_FLEET_INSTANCES, canonical_instance_url

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose" / "miner-fleet.yml"
VARIANTS = ["base", "overlays/vllm", "overlays/sglang", "overlays/fleet"]


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
    if "CHUTES_MINER_FLEET_FRONT" in config:
        problems += _one_hotkey_problems(config, by_kind["StatefulSet"], miner, port)
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


def _one_hotkey_problems(config: dict[str, str], sts: dict[str, Any], miner: dict[str, Any],
                         port: int | None) -> list[str]:
    """A one-hotkey fleet: one front pod of this StatefulSet, siblings at the axon port."""
    problems = []
    env = {e["name"]: e for e in miner.get("env", [])}
    name, replicas = sts["metadata"]["name"], sts["spec"]["replicas"]
    if config["CHUTES_MINER_FLEET_FRONT"] not in {f"{name}-{i}" for i in range(replicas)}:
        problems.append("the fleet front must be one of the StatefulSet's pods")
    own = env.get("CHUTES_MINER_FLEET_SELF", {}).get("valueFrom", {}).get("fieldRef", {})
    if own.get("fieldPath") != "metadata.name":
        problems.append("each pod must name itself (CHUTES_MINER_FLEET_SELF from the pod name)")
    if "CHUTES_MINER_WALLET_HOTKEY" in env or not config.get("CHUTES_MINER_WALLET_HOTKEY"):
        problems.append("a fleet runs under one hotkey (CHUTES_MINER_WALLET_HOTKEY in the config)")
    urls = [u for u in config.get("CHUTES_MINER_FLEET_INSTANCES", "").split(",") if u]
    if not 0 < len(urls) < min(replicas, MAX_FLEET_INSTANCES):
        problems.append("the front must list 1..replicas-1 siblings")
    for url in urls:
        try:
            ok = urlsplit(canonical_instance_url(url)).port == port
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"sibling {url} must be http(s)://node:{port} (the axon hostPort)")
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


def test_the_one_hotkey_fleet_has_one_front_and_named_siblings() -> None:
    docs = render("overlays/fleet")
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    assert config["CHUTES_MINER_FLEET_FRONT"] == "chutes-miner-0"
    assert sts["spec"]["replicas"] == 4
    assert len(config["CHUTES_MINER_FLEET_INSTANCES"].split(",")) == 3
    # the miner itself turns every pod but the front into a sibling
    from chutes_subnet.miner.cli import config_from_args

    for pod, front in (("chutes-miner-0", True), ("chutes-miner-2", False)):
        flags = ["--subtensor.network", "local", "--axon.external_ip", "203.0.113.10",
                 "--fleet.front", config["CHUTES_MINER_FLEET_FRONT"], "--fleet.self", pod,
                 "--fleet.instances", config["CHUTES_MINER_FLEET_INSTANCES"]]
        cfg = config_from_args(build_parser().parse_args(flags))
        assert cfg.serve_axon is front and bool(cfg.fleet_instances) is front
    breakages = {
        "the fleet front must be one of the StatefulSet's pods":
            lambda c, m: c.__setitem__("CHUTES_MINER_FLEET_FRONT", "chutes-miner-7"),
        "each pod must name itself (CHUTES_MINER_FLEET_SELF from the pod name)":
            lambda c, m: m.__setitem__("env", [e for e in m["env"]
                                               if e["name"] != "CHUTES_MINER_FLEET_SELF"]),
        "sibling http://203.0.113.11:9000 must be http(s)://node:8091 (the axon hostPort)":
            lambda c, m: c.__setitem__("CHUTES_MINER_FLEET_INSTANCES", "http://203.0.113.11:9000"),
        "the front must list 1..replicas-1 siblings":
            lambda c, m: c.__setitem__("CHUTES_MINER_FLEET_INSTANCES", ""),
    }
    assert fleet_problems(docs) == []
    for expected, breaks in breakages.items():
        broken = copy.deepcopy(docs)
        breaks(next(d for d in broken if d["kind"] == "ConfigMap")["data"],
               next(d for d in broken if d["kind"] == "StatefulSet")
               ["spec"]["template"]["spec"]["containers"][0])
        assert expected in fleet_problems(broken), fleet_problems(broken)


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
    ports, gpus = [], []
    fronts: dict[str, list[set[str]]] = {}  # hotkey -> the sibling ports each front lists
    siblings: dict[str, set[str]] = {}      # hotkey -> its siblings' published ports
    for name, svc in miners.items():
        env = svc["environment"]
        problems += [f"{name}: {k} is not a miner flag" for k in env
                     if k.startswith("CHUTES_MINER_") and k not in known]
        port = env["CHUTES_MINER_AXON_PORT"]
        if svc.get("ports") != [f"{port}:{port}"]:
            problems.append(f"{name}: published port differs from its axon port")
        ports.append(port)
        hotkey = env["CHUTES_MINER_WALLET_HOTKEY"]
        if str(env.get("CHUTES_MINER_AXON_NO_SERVE", "")).lower() == "true":
            siblings.setdefault(hotkey, set()).add(port)
        else:
            listed = env.get("CHUTES_MINER_FLEET_INSTANCES", "")
            fronts.setdefault(hotkey, []).append({u.rsplit(":", 1)[-1]
                                                  for u in listed.split(",") if u})
    for hotkey in sorted(set(fronts) | set(siblings)):
        if len(fronts.get(hotkey, [])) != 1:
            problems.append(f"hotkey {hotkey} needs exactly one front (the others set "
                            "CHUTES_MINER_AXON_NO_SERVE)")
        elif fronts[hotkey][0] != siblings.get(hotkey, set()):
            problems.append(f"the front of hotkey {hotkey} must list every sibling")
    for name, svc in engines.items():
        front = svc.get("network_mode", "").removeprefix("service:")
        if front not in miners:
            problems.append(f"{name}: must share a miner's network namespace")
        cmd = svc["command"]
        if cmd[cmd.index("--host") + 1] != "127.0.0.1":
            problems.append(f"{name}: must listen on loopback only")
        for dev in svc["deploy"]["resources"]["reservations"]["devices"]:
            gpus += dev["device_ids"]
    for what, values in (("ports", ports), ("GPUs", gpus)):
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
    del broken["services"]["miner-1"]["environment"]["CHUTES_MINER_AXON_NO_SERVE"]
    assert compose_problems(broken) == [
        "hotkey miner needs exactly one front (the others set CHUTES_MINER_AXON_NO_SERVE)",
        "instances share GPUs"]
    unlisted = copy.deepcopy(doc)
    unlisted["services"]["miner-0"]["environment"]["CHUTES_MINER_FLEET_INSTANCES"] = ""
    assert compose_problems(unlisted) == ["the front of hotkey miner must list every sibling"]
