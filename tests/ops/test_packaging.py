"""Packaging and deployment files: setup.py metadata, min_compute.yml, docker-compose.yml,
and relative links in the Markdown documentation.

setup.py is read as source (``ast``), not executed, so the test sees exactly what a
build would get. Flags written in docker-compose.yml are fed to the real argument
parsers, so the compose file cannot drift from the CLIs.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


# --- setup.py ----------------------------------------------------------------------

def _setup_kwargs() -> dict[str, Any]:
    """Keyword arguments of the ``setup(...)`` call that are Python literals."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and getattr(n.func, "id", None) == "setup"]
    assert len(calls) == 1, "setup.py must call setup() exactly once"
    out: dict[str, Any] = {}
    for kw in calls[0].keywords:
        try:
            out[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
            continue  # computed values (long_description, packages)
    return out


def _console_scripts() -> dict[str, str]:
    scripts = _setup_kwargs()["entry_points"]["console_scripts"]
    pairs = [s.split("=", 1) for s in scripts]
    return {name.strip(): target.strip() for name, target in pairs}


def test_setup_declares_the_three_console_scripts() -> None:
    scripts = _console_scripts()
    assert {"chutes-subnet", "chutes-miner", "chutes-validator"} <= set(scripts)


@pytest.mark.parametrize("name", ["chutes-subnet", "chutes-miner", "chutes-validator"])
def test_console_script_targets_are_callable(name: str) -> None:
    module_name, _, attr = _console_scripts()[name].partition(":")
    assert attr, f"{name} must point at module:function"
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr)), f"{name} -> {module_name}:{attr} is not callable"


def test_setup_declares_the_extras() -> None:
    extras = _setup_kwargs()["extras_require"]
    assert {"gpu", "redis", "dev"} <= set(extras)
    assert any(req.startswith("redis") for req in extras["redis"])
    dev = " ".join(extras["dev"])
    for tool in ("pytest", "pytest-asyncio", "hypothesis"):
        assert tool in dev, f"dev extra lacks {tool}"


def test_setup_pins_the_bittensor_generation_the_code_targets() -> None:
    requires = _setup_kwargs()["install_requires"]
    assert "bittensor==11.3.0" in requires
    python = _setup_kwargs()["python_requires"]
    assert ">=3.11" in python


def test_package_data_files_exist() -> None:
    patterns = _setup_kwargs()["package_data"]["chutes_subnet"]
    for pattern in patterns:
        assert list((ROOT / "chutes_subnet").glob(pattern)), f"package_data {pattern} matches nothing"


# --- min_compute.yml ---------------------------------------------------------------

def _yaml(name: str) -> Any:
    return yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))


def test_min_compute_has_miner_and_validator_specs() -> None:
    spec = _yaml("min_compute.yml")
    assert {"version", "compute_spec", "network_spec"} <= set(spec)
    miner, validator = spec["compute_spec"]["miner"], spec["compute_spec"]["validator"]
    assert {"tee", "cpu", "gpu", "memory", "storage", "os"} <= set(miner)
    assert {"cpu", "gpu", "memory", "storage", "os"} <= set(validator)
    assert miner["tee"]["cpu_tee"] == "intel-tdx"
    assert miner["gpu"]["required"] is True and validator["gpu"]["required"] is False
    assert any("H100" in m for m in miner["gpu"]["models"])
    assert any("H200" in m for m in miner["gpu"]["models"])
    assert {"miner", "validator"} <= set(spec["network_spec"])


def _min_recommended_pairs(node: Any, path: str = "") -> list[tuple[str, float, float]]:
    pairs = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key.startswith("min_"):
                rec = node.get("recommended_" + key[4:])
                if rec is not None:
                    pairs.append((f"{path}.{key[4:]}", value, rec))
            pairs.extend(_min_recommended_pairs(value, f"{path}.{key}"))
    return pairs


def test_min_compute_figures_are_positive_and_recommended_is_not_below_min() -> None:
    pairs = _min_recommended_pairs(_yaml("min_compute.yml"))
    assert len(pairs) >= 10, "expected min/recommended pairs for cpu, memory, storage, network"
    for where, low, high in pairs:
        assert isinstance(low, (int, float)) and isinstance(high, (int, float)), where
        assert 0 < low <= high, f"{where}: min {low} > recommended {high}"


# --- docker-compose.yml ------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")


def _interpolate(text: str) -> str:
    """Resolve ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` like compose,
    with a fixed placeholder for variables that have no default."""
    def sub(m: re.Match[str]) -> str:
        op, default = m.group(2), m.group(3)
        if op in (":-", "-"):
            return default or ""
        return {"NETUID": "7"}.get(m.group(1), "placeholder")
    return _INTERPOLATION.sub(sub, text)


def _compose() -> dict[str, Any]:
    return yaml.safe_load(_interpolate((ROOT / "docker-compose.yml").read_text(encoding="utf-8")))


def _argv(value: Any) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def test_compose_defines_validator_gateway_and_redis() -> None:
    services = _compose()["services"]
    assert {"validator", "gateway", "redis"} <= set(services)
    assert services["redis"]["image"].startswith("redis:")
    for name in ("validator", "gateway"):
        build = services[name]["build"]
        assert build["dockerfile"] == "docker/validator.Dockerfile"
        assert (ROOT / build.get("context", ".") / build["dockerfile"]).resolve().parent \
            == (ROOT / "docker").resolve()


def test_compose_dockerfile_exists() -> None:
    for service in _compose()["services"].values():
        build = service.get("build")
        if build:
            assert (ROOT / build.get("context", ".") / build["dockerfile"]).is_file()


def test_compose_validator_flags_parse_with_the_validator_cli() -> None:
    from chutes_subnet.validator.cli import build_parser

    svc = _compose()["services"]["validator"]
    assert _argv(svc["entrypoint"]) == ["chutes-validator"]
    args = build_parser().parse_args(_argv(svc["command"]))
    assert args.netuid == 7
    assert args.wallet_name and args.wallet_hotkey and args.wallet_path
    assert args.subtensor_network
    assert args.gateway_port == 8000
    assert args.gateway_nonces == "redis://redis:6379/0"
    assert args.gateway_registry.startswith("sqlite:///")  # absolute path on the volume
    assert args.dev is False, "the compose stack must never accept simulated TEEs"


def test_compose_gateway_replica_shares_the_validators_stores() -> None:
    from chutes_subnet.cli import build_parser

    services = _compose()["services"]
    validator = build_parser().parse_args(
        ["validator", *_argv(services["validator"]["command"])])
    gateway_svc = services["gateway"]
    gateway = build_parser().parse_args(
        [*_argv(gateway_svc["entrypoint"])[1:], *_argv(gateway_svc["command"])])
    assert _argv(gateway_svc["entrypoint"])[0] == "chutes-subnet"
    assert gateway.command == "gateway"
    assert gateway.nonces == validator.gateway_nonces == "redis://redis:6379/0"
    assert gateway.registry == validator.gateway_registry
    assert gateway.db == validator.gateway_db


def test_compose_keeps_redis_and_metrics_private() -> None:
    services = _compose()["services"]
    assert "ports" not in services["redis"], "redis must not be published"
    for port in services["validator"].get("ports", []):
        text = str(port)
        if "9101" in text:
            assert text.startswith("127.0.0.1:"), "metrics must bind to loopback only"
    wallets = [v for v in services["validator"]["volumes"] if "wallet" in str(v)]
    assert wallets and all(str(v).endswith(":ro") for v in wallets), "mount wallets read-only"


# --- Markdown links ----------------------------------------------------------------

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)


def _markdown_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    extra = ROOT / "docker" / "README.md"
    return files + ([extra] if extra.is_file() else [])


def relative_links(text: str) -> list[str]:
    """Relative link targets of a Markdown text, outside code, without fragments."""
    text = _INLINE_CODE.sub("", _FENCE.sub("", text))
    targets = _LINK.findall(text) + _REFERENCE.findall(text)
    out = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith(("#", "//")):
            continue  # URL with a scheme, or an in-page anchor
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path:
            out.append(path)
    return out


def test_link_extraction_ignores_code_urls_and_anchors() -> None:
    text = ("see [a](docs/a.md#x), ![img](img/p.png \"t\"), [b](https://x.org/y.md),"
            " [c](#local), `[d](inline.md)`\n```\n[e](fenced.md)\n```\n[ref]: other.md\n")
    assert relative_links(text) == ["docs/a.md", "img/p.png", "other.md"]


@pytest.mark.parametrize("md", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(md: Path) -> None:
    broken = [t for t in relative_links(md.read_text(encoding="utf-8"))
              if not (md.parent / t).exists()]
    assert not broken, f"{md.relative_to(ROOT)} links to missing files: {broken}"


# --- docker/README.md build arguments ----------------------------------------------

_BUILD_CMD = re.compile(r"docker build[^\n]*")


def test_documented_build_args_are_declared_in_their_dockerfiles() -> None:
    text = (ROOT / "docker" / "README.md").read_text(encoding="utf-8")
    commands = _BUILD_CMD.findall(text.replace("\\\n", " "))  # join continued lines
    with_args = [c for c in commands if "--build-arg" in c]
    assert with_args, "docker/README.md shows no build with --build-arg"
    for command in commands:
        argv = shlex.split(command)
        dockerfile = ROOT / argv[argv.index("-f") + 1]
        assert dockerfile.is_file(), f"{dockerfile.relative_to(ROOT)} does not exist"
        declared = set(re.findall(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)",
                                  dockerfile.read_text(encoding="utf-8"), re.M))
        used = [argv[i + 1].split("=", 1)[0] for i, a in enumerate(argv[:-1])
                if a == "--build-arg"]
        missing = [a for a in used if a not in declared]
        assert not missing, f"{dockerfile.name} does not declare ARG {missing}"


# --- operator paths that broke (issue 17) -------------------------------------------

_ARG_MENTION = re.compile(r"`([A-Z][A-Z0-9_]{3,})=")


def test_build_args_named_in_any_doc_are_declared() -> None:
    """docs/miner.md said TORCH_INDEX=, the Dockerfile declares TORCH_INDEX_URL."""
    declared = set()
    for dockerfile in (ROOT / "docker").glob("*.Dockerfile"):
        declared |= set(re.findall(r"^\s*ARG\s+(\w+)", dockerfile.read_text(),
                                   re.MULTILINE))
    for md in _markdown_files():
        text = md.read_text(encoding="utf-8")
        for line in text.splitlines():
            if "build arg" not in line.lower() and "--build-arg" not in line:
                continue
            unknown = [a for a in _ARG_MENTION.findall(line) if a not in declared]
            assert not unknown, f"{md.name} names build args {unknown}; declared: {declared}"


def test_gpu_extra_is_what_tdx_imports_and_numpy_is_installed() -> None:
    kwargs = _setup_kwargs()
    providers = (ROOT / "chutes_subnet" / "attestation" / "providers" / "nvidia.py").read_text()
    assert "from verifier import" in providers
    assert any(r.startswith("nv-local-gpu-verifier") for r in kwargs["extras_require"]["gpu"])
    assert any(r.startswith("numpy") for r in kwargs["install_requires"])
    miner = (ROOT / "docker" / "miner.Dockerfile").read_text()
    assert '".[gpu]"' in miner


def test_readme_quick_start_installs_cpu_torch() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for line in text.splitlines():
        if re.search(r"pip install[^\n]*\btorch==", line):
            assert "--index-url https://download.pytorch.org/whl/cpu" in line, line


def test_compose_gateway_replica_signs_and_containers_run_as_the_wallet_owner() -> None:
    from chutes_subnet.cli import build_parser

    services = _compose()["services"]
    gw = services["gateway"]
    args = build_parser().parse_args([*_argv(gw["entrypoint"])[1:], *_argv(gw["command"])])
    assert args.wallet_name and args.wallet_path == "/wallets"
    assert not args.dangerous_unsigned_forwards
    assert any(str(v).endswith(":/wallets:ro") for v in gw["volumes"])
    raw = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert 'user: "${CHUTES_UID:-10002}:${CHUTES_GID:-10002}"' in raw
    for name in ("validator", "gateway"):
        assert services[name]["user"] == "10002:10002"
