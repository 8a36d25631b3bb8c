"""``LocalChain``: a subtensor stand-in kept in one SQLite file.

The demo runs miners and the validator as separate processes, so the "chain" is a
SQLite database they all open (``local:/path/chain.sqlite``); ``":memory:"`` gives a
private chain for single-process tests. Every operation is one transaction
(``BEGIN IMMEDIATE`` for writes), so concurrent processes see a consistent state.

Semantics follow subtensor where it matters to chutes-subnet:

- blocks advance with wall time (``block_time`` seconds per block; 0 freezes the
  clock) plus manual :meth:`LocalChain.advance` steps; the first block is 1;
- uids are the lowest free slot below ``max_uids``; deregistering frees the slot and
  drops weights from and to it;
- ``set_weights`` needs a registered hotkey holding a validator permit, refuses inside
  ``weights_rate_limit`` blocks of the previous submission (``LastUpdate`` 0 means
  never set, as in the SDK's preflight), refuses unknown uids, and stores weights
  conformed by :func:`~chutes_subnet.chain.weights.plan_weights`.

Subnets exist only once created: a file-backed chain opened with ``create=False`` (the
default for files, and what the neurons' ``local:`` spec does) refuses an unknown
netuid with a :class:`ChainError` naming the ``chutes-subnet localchain`` command that
creates it; ``":memory:"`` chains are private, so they create their subnet.

Chain parameters (``block_time``, ``weights_rate_limit``, ``max_uids``) are stored in
the file by its creator; openers passing None adopt them, openers passing a value
change them (the block clock is re-based so block numbers never jump back).
"""

from __future__ import annotations

import asyncio
import ipaddress
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ..errors import ChainError
from .types import Metagraph, Neuron, WeightsResult
from .weights import plan_weights

__all__ = ["LocalChain", "format_axon"]

T = TypeVar("T")

DEFAULT_BLOCK_TIME = 12.0
DEFAULT_WEIGHTS_RATE_LIMIT = 100
DEFAULT_MAX_UIDS = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    genesis REAL NOT NULL, block_time REAL NOT NULL, base_block INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS subnets (
    netuid INTEGER PRIMARY KEY,
    weights_rate_limit INTEGER NOT NULL, max_uids INTEGER NOT NULL,
    min_version_key INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS neurons (
    netuid INTEGER NOT NULL, uid INTEGER NOT NULL, hotkey TEXT NOT NULL,
    coldkey TEXT NOT NULL, stake REAL NOT NULL, validator_permit INTEGER NOT NULL,
    axon TEXT, registered_at INTEGER NOT NULL, last_update INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (netuid, uid), UNIQUE (netuid, hotkey));
CREATE TABLE IF NOT EXISTS weights (
    netuid INTEGER NOT NULL, hotkey TEXT NOT NULL, uid INTEGER NOT NULL,
    weight REAL NOT NULL, version_key INTEGER NOT NULL,
    PRIMARY KEY (netuid, hotkey, uid));
"""


def format_axon(ip: str, port: int) -> str:
    """``"ip:port"`` (``"[ip]:port"`` for IPv6), validated like the chain does."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError("ip is not an IPv4 or IPv6 address") from None
    if address.is_unspecified:
        raise ValueError("ip must not be the unspecified address")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError("port must be in 1..65535")
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


class LocalChain:
    """A :class:`~chutes_subnet.chain.Chain` backed by a SQLite file (see module doc)."""

    def __init__(
        self,
        path: str,
        *,
        netuid: int = 1,
        block_time: float | None = None,
        weights_rate_limit: int | None = None,
        max_uids: int | None = None,
        busy_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        create: bool | None = None,
    ) -> None:
        if block_time is not None and block_time < 0:
            raise ValueError("block_time must be >= 0")
        if weights_rate_limit is not None and weights_rate_limit < 0:
            raise ValueError("weights_rate_limit must be >= 0")
        if max_uids is not None and not 0 < max_uids <= 65536:
            raise ValueError("max_uids must be in 1..65536")
        self.netuid = int(netuid)
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            if path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ChainError("cannot open the local chain database") from exc
        if create is None:
            create = path == ":memory:"
        try:
            self._run(self._init_params, block_time, weights_rate_limit, max_uids, create)
        except ChainError:
            self.close()
            raise

    # --- plumbing ---------------------------------------------------------------

    @contextmanager
    def _tx(self, write: bool) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise ChainError("local chain is closed")
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _run(self, fn: Callable[..., T], *args: Any, write: bool = True) -> T:
        try:
            with self._tx(write) as conn:
                return fn(conn, *args)
        except sqlite3.Error as exc:
            raise ChainError("local chain database error") from exc

    async def _arun(self, fn: Callable[..., T], *args: Any, write: bool = False) -> T:
        return await asyncio.to_thread(self._run, fn, *args, write=write)

    def _init_params(
        self,
        conn: sqlite3.Connection,
        block_time: float | None,
        weights_rate_limit: int | None,
        max_uids: int | None,
        create: bool,
    ) -> None:
        now = self._clock()
        row = conn.execute("SELECT block_time FROM clock WHERE id = 1").fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO clock VALUES (1, ?, ?, 1)",
                (now, DEFAULT_BLOCK_TIME if block_time is None else float(block_time)),
            )
        elif block_time is not None and float(block_time) != row[0]:
            current = self._block(conn)
            conn.execute(
                "UPDATE clock SET genesis = ?, block_time = ?, base_block = ? WHERE id = 1",
                (now, float(block_time), current),
            )
        if create:
            conn.execute(
                "INSERT OR IGNORE INTO subnets (netuid, weights_rate_limit, max_uids)"
                " VALUES (?, ?, ?)",
                (self.netuid, DEFAULT_WEIGHTS_RATE_LIMIT, DEFAULT_MAX_UIDS),
            )
        elif conn.execute("SELECT 1 FROM subnets WHERE netuid = ?", (self.netuid,)).fetchone() \
                is None:
            known = [r[0] for r in conn.execute("SELECT netuid FROM subnets ORDER BY netuid")]
            raise ChainError(
                f"subnet {self.netuid} does not exist on the local chain {self.path} "
                f"(subnets: {known or 'none'}); create it with: chutes-subnet localchain "
                f"create-subnet --chain local:{self.path} --netuid {self.netuid}")
        if weights_rate_limit is not None:
            conn.execute(
                "UPDATE subnets SET weights_rate_limit = ? WHERE netuid = ?",
                (int(weights_rate_limit), self.netuid),
            )
        if max_uids is not None:
            conn.execute(
                "UPDATE subnets SET max_uids = ? WHERE netuid = ?", (int(max_uids), self.netuid)
            )

    def _block(self, conn: sqlite3.Connection) -> int:
        genesis, block_time, base = conn.execute(
            "SELECT genesis, block_time, base_block FROM clock WHERE id = 1"
        ).fetchone()
        if block_time <= 0:
            return int(base)
        return int(base) + max(0, int((self._clock() - genesis) / block_time))

    def _subnet(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        return conn.execute(
            "SELECT weights_rate_limit, max_uids, min_version_key FROM subnets WHERE netuid = ?",
            (self.netuid,),
        ).fetchone()

    def _neuron_row(self, conn: sqlite3.Connection, hotkey: str) -> tuple | None:
        return conn.execute(
            "SELECT uid, coldkey, validator_permit, last_update FROM neurons"
            " WHERE netuid = ? AND hotkey = ?",
            (self.netuid, hotkey),
        ).fetchone()

    # --- administration (synchronous: used by demo setup and tests) ---------------

    def register(
        self, hotkey: str, coldkey: str, *, stake: float = 0.0, validator_permit: bool = False
    ) -> int:
        """Register ``hotkey`` (owned by ``coldkey``) and return its uid.

        Re-registering the same hotkey with the same coldkey updates its stake and
        permit (so demo setup can be re-run); a different coldkey is refused.
        """
        if not hotkey or not coldkey:
            raise ValueError("hotkey and coldkey are required")
        if stake < 0:
            raise ValueError("stake must be >= 0")
        return self._run(self._register, hotkey, coldkey, float(stake), bool(validator_permit))

    def _register(
        self, conn: sqlite3.Connection, hotkey: str, coldkey: str, stake: float, permit: bool
    ) -> int:
        existing = self._neuron_row(conn, hotkey)
        if existing is not None:
            if existing[1] != coldkey:
                raise ChainError("hotkey is already registered under another coldkey")
            conn.execute(
                "UPDATE neurons SET stake = ?, validator_permit = ? WHERE netuid = ? AND uid = ?",
                (stake, int(permit), self.netuid, existing[0]),
            )
            return int(existing[0])
        _, max_uids, _ = self._subnet(conn)
        taken = {
            row[0]
            for row in conn.execute("SELECT uid FROM neurons WHERE netuid = ?", (self.netuid,))
        }
        uid = next((u for u in range(max_uids) if u not in taken), None)
        if uid is None:
            raise ChainError(f"subnet {self.netuid} is full ({max_uids} uids)")
        conn.execute(
            "INSERT INTO neurons (netuid, uid, hotkey, coldkey, stake, validator_permit,"
            " axon, registered_at, last_update) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, 0)",
            (self.netuid, uid, hotkey, coldkey, stake, int(permit), self._block(conn)),
        )
        return uid

    def deregister(self, hotkey: str) -> None:
        """Remove ``hotkey``; its uid becomes free and weights from/to it are dropped."""
        self._run(self._deregister, hotkey)

    def _deregister(self, conn: sqlite3.Connection, hotkey: str) -> None:
        row = self._neuron_row(conn, hotkey)
        if row is None:
            raise ChainError("hotkey is not registered")
        conn.execute("DELETE FROM neurons WHERE netuid = ? AND uid = ?", (self.netuid, row[0]))
        conn.execute(
            "DELETE FROM weights WHERE netuid = ? AND (hotkey = ? OR uid = ?)",
            (self.netuid, hotkey, row[0]),
        )

    def advance(self, n: int = 1) -> int:
        """Move the chain forward ``n`` blocks; returns the new block."""
        if n < 0:
            raise ValueError("cannot move the chain backwards")

        def step(conn: sqlite3.Connection) -> int:
            conn.execute("UPDATE clock SET base_block = base_block + ? WHERE id = 1", (int(n),))
            return self._block(conn)

        return self._run(step)

    def get_weights(self, hotkey: str) -> dict[int, float]:
        """The weights validator ``hotkey`` last set (``{}`` if none)."""
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT uid, weight FROM weights WHERE netuid = ? AND hotkey = ? ORDER BY uid",
                (self.netuid, hotkey),
            ).fetchall(),
            write=False,
        )
        return {int(uid): float(weight) for uid, weight in rows}

    def set_min_version_key(self, version_key: int) -> None:
        """Refuse weights submitted with a lower version key (subnet owner setting)."""
        self._run(
            lambda conn: conn.execute(
                "UPDATE subnets SET min_version_key = ? WHERE netuid = ?",
                (int(version_key), self.netuid),
            )
        )

    # --- Chain interface --------------------------------------------------------

    async def metagraph(self) -> Metagraph:
        return await self._arun(self._metagraph)

    def _metagraph(self, conn: sqlite3.Connection) -> Metagraph:
        block = self._block(conn)
        rows = conn.execute(
            "SELECT uid, hotkey, coldkey, validator_permit, stake, axon FROM neurons"
            " WHERE netuid = ? ORDER BY uid",
            (self.netuid,),
        ).fetchall()
        neurons = tuple(
            Neuron(
                uid=int(uid),
                hotkey=hotkey,
                coldkey=coldkey,
                validator_permit=bool(permit),
                stake=float(stake),
                axon=axon,
            )
            for uid, hotkey, coldkey, permit, stake, axon in rows
        )
        return Metagraph(netuid=self.netuid, block=block, neurons=neurons)

    async def block(self) -> int:
        return await self._arun(self._block)

    async def serve_axon(self, hotkey: str, ip: str, port: int) -> None:
        axon = format_axon(ip, port)

        def serve(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE neurons SET axon = ? WHERE netuid = ? AND hotkey = ?",
                (axon, self.netuid, hotkey),
            )
            if cursor.rowcount != 1:
                raise ChainError(f"hotkey is not registered on netuid {self.netuid}")

        await self._arun(serve, write=True)

    async def set_weights(
        self, hotkey: str, weights: dict[int, float], version_key: int
    ) -> WeightsResult:
        return await self._arun(self._set_weights, hotkey, dict(weights), version_key, write=True)

    def _set_weights(
        self, conn: sqlite3.Connection, hotkey: str, weights: dict[int, float], version_key: int
    ) -> WeightsResult:
        block = self._block(conn)
        row = self._neuron_row(conn, hotkey)
        if row is None:
            return WeightsResult(False, f"hotkey is not registered on netuid {self.netuid}", block)
        _uid, _coldkey, permit, last_update = row
        if not permit:
            return WeightsResult(False, "hotkey has no validator permit", block)
        rate_limit, _max_uids, min_version_key = self._subnet(conn)
        since = block - int(last_update)
        if last_update > 0 and since < rate_limit:
            return WeightsResult(
                False,
                f"rate limited: weights were set {since} blocks ago; the limit is "
                f"{rate_limit} blocks (retry in {rate_limit - since})",
                block,
            )
        if int(version_key) < min_version_key:
            return WeightsResult(False, "version key is older than the subnet requires", block)
        known = {
            r[0] for r in conn.execute("SELECT uid FROM neurons WHERE netuid = ?", (self.netuid,))
        }
        if any(uid not in known for uid in weights):
            return WeightsResult(False, "weights reference uids that are not registered", block)
        try:
            planned = plan_weights(weights)
        except ValueError as exc:
            return WeightsResult(False, f"invalid weights: {exc}", block)
        if not planned:
            return WeightsResult(False, "all weights are zero; nothing to set", block)
        conn.execute("DELETE FROM weights WHERE netuid = ? AND hotkey = ?", (self.netuid, hotkey))
        conn.executemany(
            "INSERT INTO weights VALUES (?, ?, ?, ?, ?)",
            [(self.netuid, hotkey, uid, w, int(version_key)) for uid, w in planned.items()],
        )
        conn.execute(
            "UPDATE neurons SET last_update = ? WHERE netuid = ? AND hotkey = ?",
            (block, self.netuid, hotkey),
        )
        return WeightsResult(True, f"weights set for {len(planned)} uids", block)

    async def blocks_since_last_update(self, hotkey: str) -> int:
        def since(conn: sqlite3.Connection) -> int:
            row = self._neuron_row(conn, hotkey)
            if row is None:
                raise ChainError(f"hotkey is not registered on netuid {self.netuid}")
            return self._block(conn) - int(row[3])

        return await self._arun(since)

    async def weights_rate_limit(self) -> int:
        return await self._arun(lambda conn: int(self._subnet(conn)[0]))

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"LocalChain(path={self.path!r}, netuid={self.netuid})"
