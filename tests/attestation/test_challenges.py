"""The attestation challenge book: single use, expiry, thread safety, and the verifier
consuming what it checks."""

from __future__ import annotations

import os
import threading

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.attestation.verify.challenges import ChallengeBook
from chutes_subnet.attestation.verify.policy import Policy
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.single_use import Use

HOTKEY = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


def test_challenge_book_single_use_and_expiry():
    now = [100.0]
    book = ChallengeBook(ttl=60, clock=lambda: now[0])
    a, b = book.issue(), book.issue()
    assert len(a) == 32 and a != b
    assert book.consume(a) is Use.ACCEPTED and book.consume(a) is Use.UNKNOWN
    now[0] += 61
    assert book.consume(b) is Use.EXPIRED
    assert book.consume(os.urandom(32)) is Use.UNKNOWN and book.consume(b"x") is Use.UNKNOWN


def test_challenge_book_is_thread_safe():
    book = ChallengeBook()
    nonce = book.issue()
    wins = []
    threads = [threading.Thread(target=lambda: wins.append(book.consume(nonce).ok))
               for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1


def test_verifier_consumes_challenges():
    book = ChallengeBook()
    nonce = book.issue()
    ev = SimulatedProvider(seed=b"s").collect(nonce, b"pk", HOTKEY)
    v = Verifier(Policy.development(), dangerous_accept_simulated_tee=True, challenges=book)
    assert v.verify(ev, nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY).ok
    again = v.verify(ev, nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY)
    assert again.reason_codes == ("nonce_unknown_or_used",)
