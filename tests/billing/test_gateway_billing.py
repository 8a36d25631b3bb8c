"""End to end on loopback: a TAO deposit (recorded chain, real SDK) is credited once,
encrypted requests through the OpenAI SDK -> gateway -> real miner debit exact
amounts, an exhausted balance is refused with 402 before anything is encrypted, a
top-up serves again, and a plan bought over the API covers requests."""

from __future__ import annotations

import asyncio
import time

import bittensor as bt
import httpx
import openai
import pytest

from chutes_subnet.billing.deposits import DepositWatcher, SdkChainReader, deposit_keypair
from chutes_subnet.billing.gate import BillingGate
from chutes_subnet.billing.ledger import Ledger
from chutes_subnet.billing.plans import Plan
from chutes_subnet.billing.prices import PriceBook, TokenPrice, cost_rao
from chutes_subnet.client import E2EETransport
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from tests.billing.recorded_chain import RecordedChain, transfer_event
from tests.miner_fixtures import miner_record, start_real_miner
from tests.servers import UvicornThread

MODEL = "test/billed-model"
MSG = [{"role": "user", "content": "what does this cost?"}]
PRICE = TokenPrice(prompt_rao_per_mtok=2_000_000_000, completion_rao_per_mtok=7_000_000_000)
SEED = bytes(range(32))


def wait_for_entries(ledger: Ledger, key_id: str, kind: str, count: int) -> list:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [e for e in ledger.entries(key_id, limit=1000) if e.kind == kind]
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"expected {count} {kind} entries")


@pytest.fixture
def miner():
    server, inst = start_real_miner(MODEL)
    yield server, inst
    server.stop()


def test_deposit_spend_402_topup_plan(miner, tmp_path, ledger_url) -> None:
    server, inst = miner
    ledger = Ledger(ledger_url)
    plans = {"daily": Plan("daily", "day", tokens_per_period=10_000, price_rao=1_000_000)}
    gate = BillingGate(ledger, PriceBook(models={MODEL: PRICE}), master_seed=SEED, plans=plans)
    keys, registry = MemoryApiKeyStore(), MemoryInstanceRegistry()
    secret, key = keys.create("app")
    registry.upsert(miner_record(inst, server.url))
    app = create_app(GatewayConfig(), registry=registry, nonce_store=MemoryNonceStore(),
                     keys=keys, usage=MemoryUsageMeter(), billing=gate)

    # the key's deposit address, and a deposit to it on chain
    node = RecordedChain(500, 20)
    node.finalized = 519
    address = gate.deposit_address(key.key_id)
    assert address == deposit_keypair(SEED, key.key_id).ss58_address
    node.set_block(505, [transfer_event("5Payer", address, 1_000_000)])
    watcher = DepositWatcher(ledger, SdkChainReader(bt.Client(substrate=node)), start_block=500,
                             confirmations=2)
    assert asyncio.run(watcher.step()) == 1
    assert asyncio.run(watcher.step()) == 0  # credited once
    assert ledger.balance(key.key_id) == 1_000_000

    with UvicornThread(app) as gw:
        http = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {secret}"})
        assert http.get("/v1/balance").json()["balance_rao"] == 1_000_000
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0,
                               http_client=httpx.Client(transport=E2EETransport(verify="gateway")))

        def ask() -> openai.types.chat.ChatCompletion:
            return client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=24)

        first = ask()
        per_request = cost_rao(first.usage.prompt_tokens, first.usage.completion_tokens, PRICE)
        assert per_request > 0
        [usage] = wait_for_entries(ledger, key.key_id, "usage", 1)
        assert -usage.amount_rao == per_request
        assert (usage.prompt_tokens, usage.completion_tokens) == (
            first.usage.prompt_tokens, first.usage.completion_tokens)
        served = 1
        while ledger.balance(key.key_id) > 0:
            ask()
            served += 1
            wait_for_entries(ledger, key.key_id, "usage", served)
        assert ledger.balance(key.key_id) == 1_000_000 - served * per_request
        assert served == -(-1_000_000 // per_request)

        # exhausted: refused with 402 at discovery, before any envelope is built
        with pytest.raises(openai.APIStatusError) as refused:
            ask()
        assert refused.value.status_code == 402
        assert address in refused.value.response.text
        body = http.get("/v1/balance").json()
        assert body["can_request"] is False and body["deposit_address"] == address

        # top up on chain: served again
        node.set_block(520, [transfer_event("5Payer", address, 10_000_000)])
        for n in range(521, 524):
            node.set_block(n, [])
        node.finalized = 523
        assert asyncio.run(watcher.step()) == 1
        ask()
        wait_for_entries(ledger, key.key_id, "usage", served + 1)

        # buy a plan over the API: the next requests are covered by its quota
        assert http.post("/v1/plans/nope/buy").status_code == 404
        bought = http.post("/v1/plans/daily/buy", headers={"Idempotency-Key": "buy-1"})
        assert bought.status_code == 200, bought.text
        again = http.post("/v1/plans/daily/buy", headers={"Idempotency-Key": "buy-1"})
        assert again.json() == bought.json()  # a retried purchase is not charged twice
        before = ledger.balance(key.key_id)
        ask()
        covered = wait_for_entries(ledger, key.key_id, "usage", served + 2)[0]
        assert covered.amount_rao == 0 and covered.plan_tokens > 0
        assert ledger.balance(key.key_id) == before
        status = http.get("/v1/balance").json()
        assert status["plan"]["plan_id"] == "daily"
        assert status["plan"]["tokens_left"] == 10_000 - covered.plan_tokens
    assert ledger.balance(key.key_id) == sum(e.amount_rao for e in ledger.entries(key.key_id,
                                                                                  limit=1000))
    ledger.close()


def test_unpriced_models_and_gateways_without_billing(miner) -> None:
    server, inst = miner
    keys, registry = MemoryApiKeyStore(), MemoryInstanceRegistry()
    secret, _ = keys.create("app")
    registry.upsert(miner_record(inst, server.url))
    priced_elsewhere = BillingGate(Ledger(":memory:"), PriceBook(models={"other": PRICE}))
    for billing, balance_status in ((priced_elsewhere, 200), (None, 404)):
        app = create_app(GatewayConfig(), registry=registry, nonce_store=MemoryNonceStore(),
                         keys=keys, usage=MemoryUsageMeter(), billing=billing)
        with UvicornThread(app) as gw:
            http = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {secret}"})
            assert http.get("/v1/balance").status_code == balance_status
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0,
                                   http_client=httpx.Client(transport=E2EETransport(verify="gateway")))
            if billing is None:
                client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=4)
                continue
            with pytest.raises(openai.APIStatusError) as refused:
                client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=4)
            assert refused.value.status_code == 402
            assert "has no price" in refused.value.response.text
