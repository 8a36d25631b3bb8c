"""Shared fixtures: a real redis-server, a real PostgreSQL server, the public Chutes client
venv, a real OpenAI-compatible engine over a tiny model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from tests.servers import PostgresServer, RedisServer

if TYPE_CHECKING:
    from tests.real_engine import TransformersServe

# CI runs a fixed, reproducible set of examples (HYPOTHESIS_PROFILE=ci, set by .ci/run);
# local runs keep exploring new random examples every time.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# Fixtures that make every test using them slow: ``transformers serve`` takes about 10 s
# to start on 2 busy cores (once per session, paid by whichever test comes first).
SLOW_FIXTURES = frozenset({"tiny_engine"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server per test session; use ``postgres_url`` for a fresh DB."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL of a fresh, empty PostgreSQL database (one per test)."""
    return postgres_server.new_database()


@pytest.fixture(scope="session")
def chutes_client_venv():
    """The interpreter of a venv holding chutes-e2ee 0.1.0 (built once, cached)."""
    from tests import interop

    return interop.venv_python()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama-architecture model made offline (see tests/real_engine.py)."""
    from tests.real_engine import build_model

    return build_model(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path) -> Iterator[TransformersServe]:
    """``transformers serve`` (a real third-party OpenAI-compatible engine) over the
    tiny model, in bfloat16 with SDPA attention: other kernels and dtype than the
    validator's float32 eager reference."""
    from tests.real_engine import TransformersServe

    server = TransformersServe(tiny_model_dir, dtype="bfloat16", attn="sdpa").start()
    try:
        yield server
    finally:
        server.stop()
