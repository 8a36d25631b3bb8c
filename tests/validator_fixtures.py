"""Shared setup for validator tests: a local chain with real miner servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.attestation.verify.policy import Policy
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.auth import ValidatorGate, hotkey_signer
from chutes_subnet.chain import LocalChain, WeightsResult
from chutes_subnet.e2ee import KeyPair
from chutes_subnet.inference import DEFAULT_MODEL_ID, make_backend
from chutes_subnet.miner.app import create_app as create_miner_app
from chutes_subnet.miner.config import MinerConfig
from chutes_subnet.validator import MinerResult, RoundReport, ScoreEntry
from chutes_subnet.wallets import coldkey_ss58, ensure_dev_wallet, hotkey_ss58
from tests.servers import UvicornThread, free_port


@dataclass(frozen=True)
class Sibling:
    """One more instance behind a miner's hotkey, listed in its signed ``GET /fleet``.

    Without ``url`` a real instance is started (same hotkey, its own key, ``fault`` and
    simulated machine ``seed``). With ``url`` only that URL is listed; ``{name.i}`` in
    it is replaced by the port of miner ``name``'s instance ``i`` (0 = its front, 1.. its
    started siblings), e.g. ``http://127.0.0.1:{a.1}``. ``alias`` lists the front once
    more, at a second port its very app (one key) also listens on.
    """

    fault: str | None = None
    seed: bytes | None = None
    url: str | None = None
    alias: bool = False


@dataclass
class MinerHandle:
    name: str
    fault: str | None
    uid: int
    hotkey: str
    server: UvicornThread
    #: the started siblings (a fleet front only), in list order
    siblings: list[UvicornThread] = field(default_factory=list)
    #: every URL the front lists in GET /fleet (empty: it serves no list)
    listed: list[str] = field(default_factory=list)

    @property
    def state(self) -> Any:
        """The running app's ``MinerState`` (tests play a modified miner through it)."""
        return self.server.server.config.app.state.miner


@dataclass
class Subnet:
    chain: LocalChain
    chain_path: str
    validator_wallet: Any
    validator_hotkey: str
    miners: list[MinerHandle] = field(default_factory=list)

    def by_name(self, name: str) -> MinerHandle:
        return next(m for m in self.miners if m.name == name)


@functools.cache
def bench_wallet() -> Any:
    """One development wallet for tests that sign as a validator without a chain."""
    return ensure_dev_wallet("vparts", "default", tempfile.mkdtemp())


def round_report(idx: int, ema: dict[int, float], weights: dict[int, float]) -> RoundReport:
    """A committed-looking round: every uid in ``ema`` attested and served."""
    results = tuple(MinerResult(uid, f"hk{uid}", f"ck{uid}", "1.2.3.4:5", True, requests=2,
                                successes=2, tokens_per_s=10.0 * uid, ttft_s=0.05)
                    for uid in ema)
    return RoundReport(idx, 100 + idx, 0.0, 1.0, results, dict(ema), dict(ema), weights,
                       WeightsResult(True, "ok", 100 + idx))


def score_entries(ema: dict[int, float]) -> dict[int, ScoreEntry]:
    return {u: ScoreEntry(f"hk{u}", f"ck{u}", v) for u, v in ema.items()}


def dev_verifier() -> Verifier:
    return Verifier(Policy.development(), dangerous_accept_simulated_tee=True)


@contextlib.contextmanager
def local_subnet(tmp: Path, faults: dict[str, str | None], *,
                 request_timeout: float = 30.0, block_time: float = 0,
                 keypairs: dict[str, KeyPair] | None = None,
                 backends: Mapping[str, tuple[str, Callable[[], Any]]] | None = None,
                 seeds: Mapping[str, bytes] | None = None,
                 fleets: Mapping[str, Sequence[Sibling]] | None = None,
                 ) -> Iterator[Subnet]:
    """A LocalChain file, a permitted validator wallet and one real miner per entry.

    ``keypairs`` gives some miners a chosen E2EE key pair (e.g. one key for two hotkeys).
    ``backends`` maps a miner name to ``(model_id, backend factory)``; others serve
    the embedded model. ``seeds`` gives some miners a simulated machine's seed (one
    seed for two miners = one TD platform and one GPU set behind two hotkeys).
    ``fleets`` makes some miners fleet fronts: they serve ``GET /fleet`` signed by their
    hotkey, listing themselves and their :class:`Sibling` s. Other miners serve no list.
    """
    chain_path = str(tmp / "chain.sqlite")
    chain = LocalChain(chain_path, netuid=7, block_time=block_time, weights_rate_limit=0,
                       create=True)
    wallets = tmp / "wallets"
    vwallet = ensure_dev_wallet("validator", "default", str(wallets))
    vhot = hotkey_ss58(vwallet)
    chain.register(vhot, coldkey_ss58(vwallet), stake=1000.0, validator_permit=True)
    subnet = Subnet(chain, chain_path, vwallet, vhot)
    registered = []
    fleets = fleets or {}
    for name, fault in faults.items():
        w = ensure_dev_wallet(f"miner-{name}", "default", str(wallets))
        hk = hotkey_ss58(w)
        uid = chain.register(hk, coldkey_ss58(w))
        registered.append((name, fault, uid, hk, w))
    metagraph = asyncio.run(chain.metagraph())
    ports = {f"{name}.0": free_port() for name in faults}
    for name, siblings in fleets.items():
        started = [s for s in siblings if s.url is None and not s.alias]
        ports.update({f"{name}.{i}": free_port() for i in range(1, len(started) + 1)})
    servers: list[UvicornThread] = []

    def listed_url(url: str) -> str:
        for key, port in ports.items():
            url = url.replace("{" + key + "}", str(port))
        return url

    def start(name: str, port: int, hk: str, *, fault: str | None, seed: bytes | None,
              keypair: KeyPair | None = None, siblings: tuple[str, ...] = (),
              signer: Any = None) -> UvicornThread:
        model_id, factory = (backends or {}).get(
            name, (DEFAULT_MODEL_ID, lambda: make_backend("embedded")))
        config = MinerConfig(host="127.0.0.1", port=port, tee="simulated", fault=fault,
                             request_timeout=request_timeout, max_concurrency=4,
                             model_id=model_id, fleet_instances=siblings)
        app = create_miner_app(config, hotkey_ss58=hk, backend=factory(),
                               provider=SimulatedProvider(seed=seed),
                               gate=ValidatorGate(hk, lambda: metagraph), keypair=keypair,
                               fleet_signer=signer, netuid=chain.netuid)
        server = UvicornThread(app, port=port).start()
        servers.append(server)
        return server

    try:
        for name, fault, uid, hk, w in registered:
            started, listed, aliases = [], [], []
            for sib in fleets.get(name, ()):
                if sib.url is not None:
                    listed.append(listed_url(sib.url))
                    continue
                if sib.alias:
                    aliases.append(free_port())
                    listed.append(f"http://127.0.0.1:{aliases[-1]}")
                    continue
                port = ports[f"{name}.{len(started) + 1}"]
                started.append(start(name, port, hk, fault=sib.fault, seed=sib.seed))
                listed.append(f"http://127.0.0.1:{port}")
            front = start(name, ports[f"{name}.0"], hk, fault=fault,
                          seed=(seeds or {}).get(name), keypair=(keypairs or {}).get(name),
                          siblings=tuple(listed),
                          signer=hotkey_signer(w) if name in fleets else None)
            for port in aliases:  # the front's own app on one more port: one key, two URLs
                servers.append(UvicornThread(front.server.config.app, port=port).start())
            asyncio.run(chain.serve_axon(hk, "127.0.0.1", front.port))
            subnet.miners.append(MinerHandle(
                name, fault, uid, hk, front, started,
                [front.url, *listed] if name in fleets else []))
        yield subnet
    finally:
        for server in servers:
            server.stop()
        chain.close()
