"""BittensorChain against a live subtensor devnet (``pytest -m localnet``).

Start one with ``scripts/localnet.sh chain`` and run::

    BT_CHAIN_ENDPOINT=ws://127.0.0.1:9944 LOCALNET_NETUID=2 pytest -m localnet

The tests use the wallets the script created (``LOCALNET_WALLET_PATH``, default
``.localnet/wallets``). Without a reachable endpoint every test is reported as
skipped with the reason, never as passed.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

from chutes_subnet.chain import BittensorChain, Metagraph
from chutes_subnet.wallets import hotkey_ss58, load_wallet

pytestmark = pytest.mark.localnet

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT = os.environ.get("BT_CHAIN_ENDPOINT", "")
NETUID = int(os.environ.get("LOCALNET_NETUID") or (
    (ROOT / ".localnet" / "netuid").read_text().strip()
    if (ROOT / ".localnet" / "netuid").is_file() else "2"))
WALLET_PATH = os.environ.get("LOCALNET_WALLET_PATH", str(ROOT / ".localnet" / "wallets"))


def _reachable(endpoint: str) -> str | None:
    """None if the endpoint accepts TCP connections, else the reason it does not."""
    if not endpoint:
        return "BT_CHAIN_ENDPOINT is not set (start a devnet with scripts/localnet.sh chain)"
    url = urlparse(endpoint)
    if url.scheme not in ("ws", "wss") or not url.hostname:
        return f"BT_CHAIN_ENDPOINT={endpoint!r} is not a ws:// or wss:// URL"
    port = url.port or (443 if url.scheme == "wss" else 9944)
    try:
        with socket.create_connection((url.hostname, port), timeout=3):
            return None
    except OSError as exc:
        return f"subtensor at {endpoint} does not answer ({exc.__class__.__name__})"


@pytest.fixture(scope="module")
def endpoint() -> str:
    reason = _reachable(ENDPOINT)
    if reason:
        pytest.skip(reason)
    return ENDPOINT


def _wallet(name: str):
    try:
        return load_wallet(name, "default", WALLET_PATH)
    except FileNotFoundError as exc:
        pytest.skip(f"devnet wallet missing ({exc}); run scripts/localnet.sh chain first")


async def test_metagraph_read(endpoint):
    chain = BittensorChain(NETUID, None, chain_endpoint=endpoint, timeout=30)
    try:
        graph = await chain.metagraph()
        assert isinstance(graph, Metagraph) and graph.netuid == NETUID
        assert graph.block > 0 and graph.block <= await chain.block()
        assert len(graph.neurons) >= 1
    finally:
        await chain.aclose()


async def test_serve_axon_is_visible_in_the_metagraph(endpoint):
    miner = _wallet("miner")
    chain = BittensorChain(NETUID, miner, chain_endpoint=endpoint, timeout=60)
    try:
        port = 20000 + os.getpid() % 20000
        await chain.serve_axon(hotkey_ss58(miner), "127.0.0.1", port)
        neuron = (await chain.metagraph()).by_hotkey(hotkey_ss58(miner))
        assert neuron is not None and neuron.axon == f"127.0.0.1:{port}"
    finally:
        await chain.aclose()


async def test_set_weights_through_the_sdk(endpoint):
    validator = _wallet("validator")
    chain = BittensorChain(NETUID, validator, chain_endpoint=endpoint, timeout=60)
    try:
        graph = await chain.metagraph()
        me = graph.by_hotkey(hotkey_ss58(validator))
        assert me is not None, "validator hotkey is not registered on the devnet subnet"
        targets = {n.uid: 1.0 for n in graph.neurons if n.uid != me.uid} or {me.uid: 1.0}
        limit = await chain.weights_rate_limit()
        since = await chain.blocks_since_last_update(hotkey_ss58(validator))
        if since < limit:
            await asyncio.sleep(min(120, (limit - since) * 12))
        result = await chain.set_weights(hotkey_ss58(validator), targets, version_key=0)
        assert result.success, result.message
        again = await chain.set_weights(hotkey_ss58(validator), targets, version_key=0)
        assert not again.success and "rate limited" in again.message
    finally:
        await chain.aclose()
