"""The validator neuron: rounds aligned to the chain, scores, weights, state.

One round (:meth:`Validator.run_round`):

1. metagraph snapshot; targets = every other neuron (those without an axon score 0
   as ``no_axon``), optionally a random sample of ``sample_size``;
2. per target, its instances (:mod:`.fleet_fetch`: the hotkey-signed ``GET /fleet`` list,
   at most ``max_instances_per_uid``; a miner without a list is its one instance);
   per instance, with bounded concurrency (``concurrency`` in all,
   ``instance_concurrency`` per uid) and a per-instance deadline: attestation
   (cached key or fresh challenge), then the encrypted benchmark on the attested key,
   its answers checked against the chute's reference (embedded recomputation, or
   token count + logprobs of a real model; ``unverified`` without one);
   with a chute registry, instances of unregistered or retired chutes fail here
   (:mod:`.supply`);
3. one key, one uid (:mod:`.identity`): a uid presenting an instance key another
   uid holds is refused; one machine, one uid (:mod:`.hardware`): a TDX platform or
   GPU presented by several uids earns for its incumbent only, and a GPU counts for
   one instance of a fleet; then pure scoring (:mod:`.scoring`): per-instance scores
   (times the chute's supply multiplier, :mod:`.supply`) summed per uid, EMA with
   resets, coldkey dedupe, SDK-identical weight planning;
4. weights through :meth:`Chain.set_weights` when the rate limit allows;
5. one atomic state commit, then the instance registry (one record per attested
   instance; each uid creates, refreshes or removes only its own records) and metrics
   are updated.

:meth:`Validator.run` repeats rounds every ``round_blocks`` blocks until stopped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import httpx

from chutes_subnet.attestation.verify.signed_statements import policy_sha256, sign_statement
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.auth import hotkey_signer
from chutes_subnet.chain import Chain, Metagraph, Neuron, WeightsResult
from chutes_subnet.errors import ChainError, StatementError
from chutes_subnet.gateway.shapes import RequestShape
from chutes_subnet.registry import (
    EXPIRED_RETENTION_SECONDS,
    InstanceRecord,
    InstanceRegistry,
    RegistryError,
)
from chutes_subnet.registry.demand import MAX_MULTIPLIER, Target
from chutes_subnet.wallets import hotkey_ss58

from .attestor import AttestedInstance, Attestor
from .benchmark import BenchHTTP, BenchmarkOutcome, ReferenceCache, run_benchmark
from .config import ValidatorConfig
from .failures import EvaluationFailure
from .fleet_fetch import FleetCache, FleetMember, fetch_fleet
from .gateway_path import GatewayPath
from .hardware import FLEET_GPU_REUSED, GPU_REUSED, PLATFORM_REUSED, refuse_shared_hardware
from .identity import DUPLICATE_REASON, FLEET_DUPLICATE, holders_from, refuse_duplicate_keys
from .metrics import ValidatorMetrics
from .prompts import miner_prompts, new_round_seed
from .reference import ReferenceBook
from .results import MinerResult, RoundReport
from .scoring import (
    ScoreEntry,
    instance_scores,
    reset_uids,
    sum_by_uid,
    update_ema,
    weights_from_scores,
)
from .state import ValidatorState
from .statements import merge_statements, statement_for
from .supply import ChuteCatalog, check_served_chute, supply_multipliers
from .table import ScoreRow, build_score_table
from .workers import WorkerPool

__all__ = ["Validator", "OrganicSource", "explain_no_miners", "fallback_weights"]

log = logging.getLogger(__name__)

#: refusals after the round (shared keys or hardware): the instance's key is forgotten
_REFUSED_AFTER_ROUND = (DUPLICATE_REASON, PLATFORM_REUSED, GPU_REUSED, FLEET_DUPLICATE,
                        FLEET_GPU_REUSED)


class OrganicSource(Protocol):
    """Organic traffic served per uid since the previous call (e.g. from the gateway)."""

    def served_tokens(self) -> Mapping[int, float]: ...


def fallback_weights(weights: dict[int, float], metagraph: Metagraph,
                     fallback_uid: int | None) -> dict[int, float]:
    """``weights``, or ``{fallback_uid: 1.0}`` when no miner has a positive weight.

    Without a fallback a validator whose miners all fail sets nothing, its old weights
    age out and its vtrust drops. The default fallback is uid 0, which on a dynamic-TAO
    subnet is the owner's hotkey registered at creation: weight there burns the miners'
    share instead of rewarding anyone. ``None`` (``--weights.fallback_uid -1``) or a uid
    not in the metagraph keeps the old behaviour (nothing is set).
    """
    if any(w > 0 for w in weights.values()) or fallback_uid is None \
            or metagraph.by_uid(fallback_uid) is None:
        return weights
    return {fallback_uid: 1.0}


def explain_no_miners(metagraph: Metagraph, own_hotkey: str) -> str:
    """Why a round has nothing to evaluate, and what the operator can do about it."""
    others = [n for n in metagraph.neurons if n.hotkey != own_hotkey]
    registered = metagraph.by_hotkey(own_hotkey) is not None
    where = f"netuid {metagraph.netuid}"
    if not registered:
        return (f"0 miners: this validator's hotkey {own_hotkey} is not registered on {where} "
                f"(wrong --netuid or --wallet.*?)")
    if not others:
        return (f"0 miners: {where} has no neuron besides this validator; register miner "
                f"hotkeys (btcli subnets register, or on a dev chain: chutes-subnet localchain "
                f"register) and start the miners")
    return (f"0 miners: {len(others)} other neuron(s) on {where}, but none is a miner to "
            f"evaluate (validator-permit holders without an axon are skipped)")


class Validator:
    """A chutes-subnet validator (see module doc)."""

    def __init__(
        self,
        config: ValidatorConfig,
        *,
        chain: Chain,
        wallet: Any,
        verifier: Verifier,
        state: ValidatorState,
        registry: InstanceRegistry | None = None,
        organic: OrganicSource | None = None,
        metrics: ValidatorMetrics | None = None,
        http: httpx.AsyncClient | None = None,
        references: ReferenceBook | None = None,
        bench_http: BenchHTTP | None = None,
        shapes: Callable[[], Sequence[RequestShape]] | None = None,
        pool: WorkerPool | None = None,
        chutes: ChuteCatalog | None = None,
        supply: Callable[[], Mapping[str, Target]] | None = None,
    ) -> None:
        self.config = config
        #: worker processes for verification and recomputation (None: threads here)
        self.pool = pool
        #: reference models by model id: token counting and logprob verification
        self.references = references or ReferenceBook()
        self.chain = chain
        self.wallet = wallet
        self.hotkey = hotkey_ss58(wallet)
        self._signer = hotkey_signer(wallet)  # every challenge and benchmark request is signed
        self.state = state
        self.registry = registry
        #: the chute registry: instances of unregistered or retired chutes are refused
        self.chutes = chutes
        #: per-chute targets (their supply multiplier scales round scores)
        self.supply = supply
        self.organic = organic
        self.metrics = metrics or ValidatorMetrics()
        self._owns_http = http is None
        # fleet lists and challenges only (each at most once per uid or instance a round;
        # benchmarks use ``bench_http``'s own pool): no idle connections are kept, since
        # httpcore's pool bookkeeping grows with the square of the idle connections it
        # holds; a fleet-sized round spent more CPU there than the rare reuse saves
        # (bench/validator.py, docs/validator.md "At fleet scale")
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            limits=httpx.Limits(max_connections=max(16, config.concurrency * 2),
                                max_keepalive_connections=0),
            follow_redirects=False, trust_env=False)
        #: benchmark requests travel the organic path (the gateway's miner client);
        #: the in-process gateway shares its own with :meth:`use_gateway`
        self._owns_bench = bench_http is None
        self.bench_http: BenchHTTP = bench_http or GatewayPath(
            connect_timeout=config.connect_timeout, read_timeout=config.timeout)
        #: organic request shapes (sizes) the benchmark copies; None = natural sizes
        self.shapes = shapes
        #: the verifier policy's digest, named by every statement this validator signs
        self._policy_sha256 = policy_sha256(verifier.policy)
        self.attestor = Attestor(verifier, self._signer, self.http, ttl=config.attestation_ttl,
                                 rechallenge_probability=config.rechallenge_probability,
                                 pool=pool)
        snapshot = state.load()
        self.round_index = snapshot.round_index
        self.last_round_block = snapshot.last_block
        self.scores: dict[int, ScoreEntry] = dict(snapshot.scores)
        #: uid -> {instance_id: hotkey} of the records this validator holds in the registry
        self._published: dict[int, dict[str, str]] = {}
        #: each uid's last verified instance list, reused while fresh (:mod:`.fleet`)
        self._fleets = FleetCache()
        #: hardware identity -> hotkey credited for it last round (:mod:`.hardware`)
        self._hardware_holders: dict[str, str] = {}
        self._rng = random.SystemRandom()

    # --- one round ----------------------------------------------------------------

    def _targets(self, metagraph: Metagraph) -> list[Neuron]:
        others = [n for n in metagraph.neurons if n.hotkey != self.hotkey]
        if not self.config.evaluate_validators:
            others = [n for n in others if n.axon or not n.validator_permit]
        size = self.config.sample_size
        if size and len(others) > size:
            others = sorted(self._rng.sample(others, size), key=lambda n: n.uid)
        return others

    async def _evaluate(self, neuron: Neuron, member: FleetMember, seed: bytes,
                        refs: ReferenceCache) -> MinerResult:
        """One instance of ``neuron``'s fleet: attest, check, benchmark."""
        started = time.perf_counter()
        url = member.url
        base: dict[str, Any] = {"uid": neuron.uid, "hotkey": neuron.hotkey,
                                "coldkey": neuron.coldkey, "axon": neuron.axon,
                                "instance_url": url}
        cfg = self.config
        bench = cfg.benchmark
        deadline = cfg.timeout * (2 + bench.prompts_per_miner + bench.canary_repeats)
        try:
            async with asyncio.timeout(deadline):
                instance, cached = await self.attestor.ensure(neuron, url)
                try:
                    if member.instance_id is not None \
                            and member.instance_id != instance.instance_id:
                        raise EvaluationFailure(
                            "fleet:instance_mismatch", "the instance at this URL attested "
                            "another key than its entry in the signed list names",
                            instance.summary)
                    if self.chutes is not None:
                        check_served_chute(self.chutes, instance.chute_id, instance.summary)
                except EvaluationFailure:
                    self.attestor.forget(neuron.uid, url)
                    raise
                embedded = instance.model == cfg.benchmark.embedded_model
                reference = None if embedded else self.references.get(instance.model)
                if (reference is not None and instance.manifest is not None
                        and not reference.matches(instance.manifest)):
                    outcome = BenchmarkOutcome((), "unverified", "this validator's reference "
                                               "has another tokenizer than the attested release")
                elif not embedded and reference is None and cfg.benchmark.require_reference:
                    outcome = BenchmarkOutcome(
                        (), "unverified", "this validator holds no reference for the model")
                else:
                    prompts = miner_prompts(seed, neuron.uid, neuron.hotkey, cfg.benchmark,
                                            embedded=embedded, scored=reference is not None)
                    outcome = await run_benchmark(
                        self.bench_http, self._signer, instance, prompts, cfg.benchmark,
                        timeout=cfg.timeout, refs=refs if embedded else None,
                        reference=reference, shapes=self._organic_shapes(len(prompts)))
        except EvaluationFailure as failure:
            return MinerResult(**base, attested=False, reason=failure.reason,
                               detail_text=failure.detail, attestation=failure.attestation,
                               duration_s=time.perf_counter() - started)
        except TimeoutError:
            self.attestor.forget(neuron.uid, url)
            return MinerResult(**base, attested=False, reason="timeout",
                               detail_text=f"evaluation exceeded {deadline:g}s",
                               duration_s=time.perf_counter() - started)
        except Exception as exc:  # miner input must never abort the round (logged)
            log.exception("uid %d: unexpected error during evaluation", neuron.uid)
            self.attestor.forget(neuron.uid, url)
            return MinerResult(**base, attested=False, reason="bad_response",
                               detail_text=f"evaluation failed ({type(exc).__name__})",
                               duration_s=time.perf_counter() - started)
        if outcome.reason is not None:
            # wrong answers and dead instances: the next round challenges them again
            self.attestor.forget(neuron.uid, url)
        return MinerResult(
            **base, attested=True, reason=outcome.reason, detail_text=outcome.detail,
            attestation=instance.summary, attestation_cached=cached,
            requests=len(outcome.samples), successes=outcome.successes,
            verified=outcome.verified, tokens_per_s=outcome.tokens_per_s, ttft_s=outcome.ttft_s,
            completion_tokens=outcome.completion_tokens,
            duration_s=time.perf_counter() - started, chute_id=instance.chute_id)

    async def _fleet(self, neuron: Neuron) -> tuple[FleetMember, ...]:
        """``neuron``'s instances (:func:`.fleet_fetch.fetch_fleet`), within one timeout."""
        try:
            async with asyncio.timeout(self.config.timeout):
                return await fetch_fleet(self.http, neuron, netuid=self.chain.netuid,
                                         limit=self.config.max_instances_per_uid,
                                         cache=self._fleets)
        except TimeoutError:
            raise EvaluationFailure("timeout", f"fleet: no complete answer in "
                                               f"{self.config.timeout:g}s") from None

    async def _evaluate_uid(self, neuron: Neuron, seed: bytes, refs: ReferenceCache,
                            gate: asyncio.Semaphore) -> list[MinerResult]:
        """Every instance ``neuron`` fronts, each on its own (one result per instance)."""
        if not neuron.axon:
            return [MinerResult(neuron.uid, neuron.hotkey, neuron.coldkey, None, False,
                                reason="no_axon", detail_text="no endpoint published")]
        started = time.perf_counter()
        try:
            async with gate:
                members = await self._fleet(neuron)
        except EvaluationFailure as failure:
            self.attestor.forget(neuron.uid)
            return [MinerResult(neuron.uid, neuron.hotkey, neuron.coldkey, neuron.axon, False,
                                reason=failure.reason, detail_text=failure.detail,
                                duration_s=time.perf_counter() - started)]
        self.attestor.retain(neuron.uid, {m.url for m in members})
        per_uid = asyncio.Semaphore(self.config.instance_concurrency)

        async def one(member: FleetMember) -> MinerResult:
            async with per_uid, gate:
                return await self._evaluate(neuron, member, seed, refs)

        return list(await asyncio.gather(*(one(m) for m in members)))

    async def _evaluate_all(self, targets: list[Neuron], seed: bytes) -> list[MinerResult]:
        """One result per instance of every target, grouped by uid in target order."""
        refs = ReferenceCache(self.config.benchmark.embedded_seed, self.pool)
        gate = asyncio.Semaphore(self.config.concurrency)
        groups = await asyncio.gather(*(self._evaluate_uid(n, seed, refs, gate)
                                        for n in targets))
        return [r for group in groups for r in group]

    async def _submit_weights(self, weights: dict[int, float]) -> WeightsResult | None:
        if not self.config.set_weights:
            return None
        if not weights:
            return WeightsResult(False, "no miner has a positive score and no fallback uid; "
                                 "nothing to set")
        try:
            block = await self.chain.block()
            since = await self.chain.blocks_since_last_update(self.hotkey)
            limit = await self.chain.weights_rate_limit()
            # since == block means "never set" (LastUpdate 0), which the chain allows
            if since < limit and since < block:
                return WeightsResult(False, f"rate limited: {since} of {limit} blocks elapsed",
                                     block)
            return await self.chain.set_weights(self.hotkey, weights, self.config.version_key)
        except ChainError as exc:
            return WeightsResult(False, f"chain error: {exc}")

    def _statements(self, registry: InstanceRegistry, instance: AttestedInstance,
                     block: int) -> tuple[str, ...]:
        """The record's statements with this validator's fresh one (unchanged on failure)."""
        old = registry.get(instance.instance_id)
        existing = old.statements if old is not None and old.hotkey == instance.hotkey else ()
        try:
            statement = statement_for(
                instance, netuid=self.chain.netuid, validator=self.hotkey,
                policy_sha256=self._policy_sha256, block=block,
                ttl_seconds=self.config.attestation_ttl)
            return merge_statements(existing, sign_statement(statement, self._signer), block)
        except (StatementError, ValueError, TypeError) as exc:
            log.warning("no attestation statement for %s: %s", instance.instance_id[:12], exc)
            return existing

    def _record(self, registry: InstanceRegistry, instance: AttestedInstance, score: float,
                block: int) -> InstanceRecord:
        s = instance.summary
        return InstanceRecord(
            instance_id=instance.instance_id, chute_id=instance.chute_id,
            model=instance.model, url=instance.url, hotkey=instance.hotkey,
            uid=instance.uid, e2e_pubkey=s.e2e_pubkey or "",
            e2e_versions=instance.e2e_versions, verified_at=s.verified_at,
            expires_at=s.expires_at, score=score, simulated=s.simulated,
            receipt_pubkey=base64.b64encode(instance.receipt_pubkey).decode("ascii"),
            statements=self._statements(registry, instance, block))

    def _publish(self, results: list[MinerResult], scores: dict[int, ScoreEntry],
                 block: int = 0, inst_scores: list[float] | None = None) -> None:
        """One registry record per passing instance; a uid's records of instances that
        did not pass (or are no longer listed) are removed.

        A record's score is its uid's EMA times the instance's share of the uid's round
        score (the whole EMA for a single instance), so gateways prefer the better
        instances of a fleet.
        """
        if self.registry is None:
            return
        inst = inst_scores if inst_scores is not None else [1.0] * len(results)
        groups: dict[int, list[tuple[MinerResult, float]]] = {}
        for r, score in zip(results, inst, strict=True):
            groups.setdefault(r.uid, []).append((r, score))
        for uid, group in groups.items():
            old = self._published.pop(uid, {})
            passing = [(r, sc, inst_) for r, sc in group
                       if r.ok and (inst_ := self.attestor.cached(uid, r.instance_url))
                       is not None]
            total = sum(sc for _r, sc, _i in passing)
            entry = scores.get(uid)
            kept: dict[str, str] = {}
            for _r, sc, instance in passing:
                share = sc / total if total > 0 else 1.0 / len(passing)
                try:
                    self.registry.upsert(self._record(
                        self.registry, instance, (entry.ema if entry else 0.0) * share, block))
                except RegistryError as exc:  # logged by the registry; never routed
                    log.warning("uid %d instance %s not published: %s", uid,
                                instance.instance_id[:12], exc)
                    continue
                kept[instance.instance_id] = instance.hotkey
            for iid, hotkey in old.items():
                if kept.get(iid) != hotkey:
                    self.registry.remove(hotkey, iid)
            if kept:
                self._published[uid] = kept
        self.registry.prune(time.time() - EXPIRED_RETENTION_SECONDS)

    async def run_round(self) -> RoundReport:
        """Evaluate, score, set weights and commit one round (see module doc)."""
        started_wall, started = time.time(), time.perf_counter()
        metagraph = await self.chain.metagraph()
        targets = self._targets(metagraph)
        if not targets:
            log.warning("%s", explain_no_miners(metagraph, self.hotkey))
        seed = new_round_seed()
        results = await self._evaluate_all(targets, seed)
        results = refuse_duplicate_keys(results, holders_from(
            self._published_pairs(),
            self._registry_holder if self.registry is not None else None))
        results, self._hardware_holders = refuse_shared_hardware(results,
                                                                 self._hardware_holders)
        for r in results:
            if r.reason in _REFUSED_AFTER_ROUND:
                self.attestor.forget(r.uid, r.instance_url)
        inst_scores = instance_scores(results, self.config.scoring, self._organic())
        if self.supply is not None:  # per instance: a fleet may serve several chutes
            inst_scores = [s * m for s, m in
                           zip(inst_scores, supply_multipliers(results, self.supply()),
                               strict=True)]
        round_scores = sum_by_uid(results, inst_scores)
        neurons = {n.uid: (n.hotkey, n.coldkey) for n in metagraph.neurons
                   if n.hotkey != self.hotkey}
        ema = update_ema(self.scores, round_scores, alpha=self.config.scoring.ema_alpha,
                         neurons=neurons, resets=reset_uids(results, self.config.scoring),
                         max_score=self.config.max_instances_per_uid * MAX_MULTIPLIER)
        weights = weights_from_scores(ema, max_weight=self.config.max_weight)
        to_submit = fallback_weights(weights, metagraph, self.config.fallback_uid)
        if to_submit is not weights:
            log.warning("no miner has a positive score: weight 1.0 on fallback uid %d (burn)",
                        self.config.fallback_uid)
        weights_result = await self._submit_weights(to_submit)
        report = RoundReport(
            round_index=self.round_index + 1, block=metagraph.block, started_at=started_wall,
            duration_s=time.perf_counter() - started, results=tuple(results),
            round_scores=round_scores, ema={u: e.ema for u, e in ema.items()},
            weights=weights, weights_result=weights_result)
        await asyncio.to_thread(self.state.commit_round, report, ema, seed)
        self.round_index, self.last_round_block, self.scores = (
            report.round_index, report.block, ema)
        self._publish(results, ema, metagraph.block, inst_scores)
        self.metrics.observe_round(report)
        self._log_round(report)
        return report

    def use_gateway(self, gateway: Any) -> None:
        """Send benchmarks through ``gateway``'s own miner client (same connections as
        organic traffic) and copy its organic request sizes."""
        self.bench_http, self._owns_bench = GatewayPath(gateway.miners), False
        self.shapes = gateway.shapes.snapshot

    def _organic_shapes(self, n: int) -> list[RequestShape | None]:
        """Paths and sealed sizes for ``n`` benchmark requests, drawn from organic
        streamed requests (the benchmark measures streams)."""
        sample = [s for s in self.shapes() if s.stream] if self.shapes is not None else []
        if not sample:
            return [None] * n
        return [self._rng.choice(sample) for _ in range(n)]

    def _organic(self) -> Mapping[int, float] | None:
        """This round's organic counts; a failing source scores no organic traffic
        (the round goes on: scoring coerces every value, see ``score_round``)."""
        if self.organic is None:
            return None
        try:
            return self.organic.served_tokens()
        except Exception:  # counts come from miner reports: never abort the round
            log.exception("organic source failed; scoring this round without it")
            return None

    def _log_round(self, report: RoundReport) -> None:
        failed = [r for r in report.results if not r.ok]
        log.info("round %d at block %d: %d miners, %d passed, %.1fs; weights: %s",
                 report.round_index, report.block, len(report.results),
                 len(report.results) - len(failed), report.duration_s,
                 report.weights_result.message if report.weights_result else "not submitted")
        for r in failed:
            log.info("uid %d failed: %s (%s)", r.uid, r.reason, r.detail_text)

    # --- the loop -------------------------------------------------------------------

    async def _next_round_due(self) -> bool:
        block = await self.chain.block()
        last = self.last_round_block
        return last is None or block >= last + self.config.round_blocks or block < last

    async def run(self, stop: asyncio.Event) -> None:
        """Run rounds every ``round_blocks`` blocks until ``stop`` is set."""
        while not stop.is_set():
            try:
                if await self._next_round_due():
                    await self.run_round()
            except ChainError as exc:
                log.warning("chain unavailable, retrying: %s", exc)
            except Exception:  # keep validating: one bad round must not stop the neuron
                log.exception("round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.poll_interval)

    def published(self) -> dict[int, str]:
        """uid -> instance id of the (first) instance this validator publishes for it."""
        return {uid: next(iter(ids)) for uid, ids in self._published.items()}

    def published_instances(self) -> dict[int, tuple[str, ...]]:
        """uid -> the instance ids this validator currently publishes for it."""
        return {uid: tuple(ids) for uid, ids in self._published.items()}

    def _published_pairs(self) -> list[tuple[str, str]]:
        return [(hotkey, iid) for ids in self._published.values() for iid, hotkey in ids.items()]

    def _registry_holder(self, instance_id: str) -> str | None:
        if self.registry is None:  # only consulted when a registry is configured
            return None
        rec = self.registry.get(instance_id)
        return rec.hotkey if rec is not None else None

    def score_table(self) -> list[ScoreRow]:
        """The committed score table."""
        return build_score_table(self.state.load())

    async def aclose(self) -> None:
        """Close the HTTP client (if owned) and the state file."""
        if self._owns_http:
            await self.http.aclose()
        if self._owns_bench and isinstance(self.bench_http, GatewayPath):
            await self.bench_http.aclose()
        self.state.close()
