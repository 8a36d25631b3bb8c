"""Online GPU revocation (OCSP) against a real loopback responder signed by the dev GPU root."""

from __future__ import annotations

import base64
import datetime as dt
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.asgi import read_body
from chutes_subnet.attestation.fetch.ocsp_client import GpuOnlineChecker
from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.attestation.verify._pem import split_pem_chain
from chutes_subnet.attestation.verify.ocsp import (
    NVIDIA_OCSP_URL,
    REVOCATION_SKIPPED_NOTE,
    REVOCATION_UNUSABLE_NOTE,
    RevocationStatus,
    ocsp_url_of,
)
from chutes_subnet.attestation.verify.policy import Policy
from chutes_subnet.attestation.verify.simulated_tee import dev_gpu_root_der, dev_gpu_root_key
from chutes_subnet.attestation.verify.verifier import Verifier
from tests.servers import UvicornThread, free_port

HOTKEY = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
ROOT = x509.load_der_x509_certificate(dev_gpu_root_der())
UTC = dt.UTC


def _delegate(eku: bool, signer: ec.EllipticCurvePrivateKey | None = None
              ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test OCSP responder")]))
               .issuer_name(ROOT.subject).public_key(key.public_key()).serial_number(77)
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1)))
    usage = ExtendedKeyUsageOID.OCSP_SIGNING if eku else ExtendedKeyUsageOID.SERVER_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
    return key, builder.sign(signer or dev_gpu_root_key(), hashes.SHA384())


class Responder:
    """ASGI OCSP responder; ``mode`` decides the answer, ``hits`` counts requests."""

    def __init__(self) -> None:
        self.mode, self.hits = "good", 0
        self.delegates = {"delegated": _delegate(True), "delegated_no_eku": _delegate(False),
                          "delegated_foreign": _delegate(True, ec.generate_private_key(ec.SECP384R1()))}

    def answer(self, body: bytes) -> bytes:
        req = ocsp.load_der_ocsp_request(body)
        now = dt.datetime.now(UTC)
        status = {"revoked": ocsp.OCSPCertStatus.REVOKED,
                  "unknown": ocsp.OCSPCertStatus.UNKNOWN}.get(self.mode, ocsp.OCSPCertStatus.GOOD)
        nxt = now - dt.timedelta(hours=1) if self.mode == "expired" else now + dt.timedelta(hours=1)
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            req.issuer_name_hash, req.issuer_key_hash, req.serial_number, req.hash_algorithm, status,
            now - dt.timedelta(hours=2), nxt,
            now - dt.timedelta(days=1) if status == ocsp.OCSPCertStatus.REVOKED else None,
            x509.ReasonFlags.key_compromise if status == ocsp.OCSPCertStatus.REVOKED else None)
        key, cert = dev_gpu_root_key(), ROOT
        if self.mode.startswith("delegated"):
            key, cert = self.delegates[self.mode]
            builder = builder.certificates([cert])
        nonce = req.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        if self.mode == "wrong_nonce":
            nonce = os.urandom(16)
        builder = builder.add_extension(x509.OCSPNonce(nonce), False)
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, cert)
        der = bytearray(builder.sign(key, hashes.SHA384()).public_bytes(serialization.Encoding.DER))
        if self.mode == "bad_signature":
            der[-1] ^= 0x01  # the last byte of the ECDSA signature (no certificates follow)
        return bytes(der)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = await read_body(receive, 1 << 20)
        self.hits += 1
        out = self.answer(body)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/ocsp-response")]})
        await send({"type": "http.response.body", "body": out})


@pytest.fixture(scope="module")
def responder() -> Iterator[tuple[Responder, str]]:
    app = Responder()
    with UvicornThread(app) as server:
        yield app, server.url + "/"


@pytest.fixture()
def fresh(responder):
    app, url = responder
    app.mode, app.hits = "good", 0
    return app, url


def _evidence(gpus: int = 2) -> tuple[Any, bytes]:
    nonce = os.urandom(32)
    return SimulatedProvider(seed=b"ocsp", gpu_count=gpus).collect(nonce, b"pk", HOTKEY), nonce


def _verify(checker: GpuOnlineChecker | None, gpus: int = 8, now: int | None = None):
    ev, nonce = _evidence(gpus)
    verifier = Verifier(Policy.development(), dangerous_accept_simulated_tee=True, gpu_online=checker)
    return verifier.verify(ev, nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY, now=now)


def _leaf_chain() -> list[bytes]:
    ev, _ = _evidence(1)
    return split_pem_chain(base64.b64decode(ev.gpu_evidence[0]["certificate"]))


def test_off_by_default_says_skipped():
    verdict = _verify(None)
    assert verdict.ok and REVOCATION_SKIPPED_NOTE in verdict.notes


def test_good_then_cached_in_memory_and_on_disk(fresh, tmp_path):
    app, url = fresh
    checker = GpuOnlineChecker(tmp_path, url=url, timeout=5)
    verdict = _verify(checker)
    assert verdict.ok, verdict.reasons
    assert REVOCATION_SKIPPED_NOTE not in verdict.notes and REVOCATION_UNUSABLE_NOTE not in verdict.notes
    assert app.hits == 8  # one leaf per GPU; the root is not queried
    assert _verify(checker).ok and app.hits == 8
    assert len(list(tmp_path.glob("*.der"))) == 8
    other = GpuOnlineChecker(tmp_path, url=url, timeout=5)
    assert _verify(other).ok and app.hits == 8
    # past nextUpdate the cache is not used: a new request goes out
    later = int(time.time()) + 7200
    assert other.check_chain(_leaf_chain(), later).status == RevocationStatus.SKIPPED_UNUSABLE
    assert app.hits == 9


@pytest.mark.parametrize("mode, what", [("revoked", "revoked"), ("unknown", "unknown status")])
def test_revoked_and_unknown_reject(fresh, tmp_path, mode, what):
    app, url = fresh
    app.mode = mode
    verdict = _verify(GpuOnlineChecker(tmp_path, url=url, timeout=5))
    assert not verdict.ok and verdict.reason_codes == ("gpu_cert_revoked",)
    assert what in verdict.reasons[0].message and app.hits == 1  # stops at the first bad chain
    assert REVOCATION_SKIPPED_NOTE not in verdict.notes


@pytest.mark.parametrize("mode", ["bad_signature", "expired", "wrong_nonce", "delegated_no_eku",
                                  "delegated_foreign"])
def test_unusable_responses_are_skipped_not_trusted(fresh, tmp_path, mode):
    app, url = fresh
    app.mode = mode
    checker = GpuOnlineChecker(tmp_path, url=url, timeout=5)
    verdict = _verify(checker, gpus=8)
    assert verdict.ok and REVOCATION_UNUSABLE_NOTE in verdict.notes
    assert not list(tmp_path.glob("*.der"))  # never cached
    app.mode = "revoked" if mode == "bad_signature" else mode
    assert checker.check_chain(_leaf_chain(), int(time.time())).status != RevocationStatus.GOOD


def test_delegated_responder_signed_by_issuer_or_a_ca_above(fresh, tmp_path):
    app, url = fresh
    app.mode = "delegated"  # responder certified by the root
    assert GpuOnlineChecker(tmp_path, url=url).check_chain(
        _leaf_chain(), int(time.time())).status == RevocationStatus.GOOD
    assert app.hits == 1
    # the leaf is issued by the device CA; the root above it certified the responder
    checker = GpuOnlineChecker(tmp_path / "all", url=url, check_leaf=True)
    assert checker.check_chain(_leaf_chain(), int(time.time())).status == RevocationStatus.GOOD
    assert app.hits == 3


def test_unreachable_responder_is_offline(tmp_path):
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    verdict = _verify(GpuOnlineChecker(tmp_path, url=f"http://127.0.0.1:{port}/", timeout=1))
    assert verdict.ok and REVOCATION_SKIPPED_NOTE in verdict.notes


def test_no_url_anywhere_is_offline(tmp_path):
    assert ocsp_url_of(x509.load_der_x509_certificate(_leaf_chain()[0])) is None
    status = GpuOnlineChecker(tmp_path).check_chain(_leaf_chain(), int(time.time())).status
    assert status == RevocationStatus.SKIPPED_OFFLINE


def test_aia_url_is_read():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    aia = x509.AuthorityInformationAccess([x509.AccessDescription(
        x509.oid.AuthorityInformationAccessOID.OCSP,
        x509.UniformResourceIdentifier("https://ocsp.ndis.nvidia.com/"))])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(dt.datetime(2025, 1, 1, tzinfo=UTC))
            .not_valid_after(dt.datetime(2030, 1, 1, tzinfo=UTC)).add_extension(aia, False)
            .sign(key, hashes.SHA256()))
    assert ocsp_url_of(cert) == "https://ocsp.ndis.nvidia.com/"


def test_validator_flags_build_the_checker(tmp_path, monkeypatch):
    """OCSP is on by default for validators; --gpu.no_ocsp turns it off."""
    from chutes_subnet.validator.cli import _verifier, build_parser

    monkeypatch.setenv("CHUTES_SUBNET_HOME", str(tmp_path))
    off = _verifier(build_parser().parse_args(["--collateral.url", "", "--gpu.no_ocsp"]))
    assert off.gpu_online is None and not off.require_revocation
    args = build_parser().parse_args(["--collateral.url", "",
                                      "--gpu.ocsp_url", "http://127.0.0.1:9/"])
    checker = _verifier(args).gpu_online
    assert isinstance(checker, GpuOnlineChecker)
    assert checker.url == "http://127.0.0.1:9/" and checker.cache_dir == tmp_path / "ocsp"
    default = _verifier(build_parser().parse_args(["--collateral.url", ""]))
    assert default.gpu_online.url == NVIDIA_OCSP_URL and not default.gpu_online.check_leaf
    assert not default.require_revocation  # offline: accepted with a note
    assert _verifier(build_parser().parse_args(["--collateral.url", "", "--gpu.ocsp"])).gpu_online
    strict = _verifier(build_parser().parse_args(["--collateral.url", "", "--gpu.ocsp_required"]))
    assert strict.require_revocation
    aia = _verifier(build_parser().parse_args(["--collateral.url", "", "--gpu.ocsp_url", ""]))
    assert aia.gpu_online.url is None


def test_failed_responder_is_not_retried_per_certificate(tmp_path):
    calls: list[str] = []

    def down(url: str, body: bytes, timeout: float) -> bytes:
        calls.append(url)
        raise OSError("connection refused")

    checker = GpuOnlineChecker(tmp_path, url="http://responder.invalid/", post=down)
    verdict = _verify(checker, gpus=8)
    assert verdict.ok and REVOCATION_SKIPPED_NOTE in verdict.notes and len(calls) == 1


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_response_verifier_only_raises_its_own_error(data):
    from chutes_subnet.attestation.verify.ocsp import OcspResponseError, verify_ocsp_response

    leaf, issuer = _FUZZ_CERTS
    good = bytearray(_FUZZ_GOOD)
    if data.draw(st.booleans()):
        blob = data.draw(st.binary(max_size=600))
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            good[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
        blob = bytes(good)
    try:
        status, nxt = verify_ocsp_response(blob, leaf, issuer, int(time.time()), b"n" * 16)
    except OcspResponseError:
        return
    assert status in RevocationStatus and nxt > time.time()


def _fuzz_seed() -> tuple[tuple[x509.Certificate, x509.Certificate], bytes]:
    from chutes_subnet.attestation.verify.ocsp import build_ocsp_request, verify_ocsp_response

    _, device, root = (x509.load_der_x509_certificate(d) for d in _leaf_chain())
    good = Responder().answer(build_ocsp_request(device, root, b"n" * 16))
    assert verify_ocsp_response(good, device, root, int(time.time()), b"n" * 16)[0] == "good"
    return (device, root), good


_FUZZ_CERTS, _FUZZ_GOOD = _fuzz_seed()


def test_real_h100_chain_queries_device_cert_and_cas(tmp_path):
    import json

    from tests.vector_files import VECTORS_DIR

    data = json.loads((VECTORS_DIR / "gpu" / "h100x8_evidence.json").read_text())
    entries = data
    chain = split_pem_chain(base64.b64decode(entries[0]["certificate"]))
    asked: list[int] = []

    def garbage(url: str, body: bytes, timeout: float) -> bytes:
        req = ocsp.load_der_ocsp_request(body)
        assert url == NVIDIA_OCSP_URL and isinstance(req.hash_algorithm, hashes.SHA384)
        asked.append(req.serial_number)
        return b"\x30\x03\x0a\x01\x01"  # OCSPResponse{malformedRequest}

    checker = GpuOnlineChecker(tmp_path, url=NVIDIA_OCSP_URL, post=garbage)
    assert checker.check_chain(chain, int(time.time())).status == RevocationStatus.SKIPPED_UNUSABLE
    certs = [x509.load_der_x509_certificate(d) for d in chain]
    assert asked == [c.serial_number for c in certs[1:-1]] and len(asked) == 3
