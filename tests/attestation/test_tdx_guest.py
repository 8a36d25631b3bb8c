"""Legacy TDX quotes: /dev/tdx_guest TDREPORT (fake device) + a real loopback fake QGS."""

from __future__ import annotations

import errno
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.attestation.providers.choose import make_provider
from chutes_subnet.attestation.providers.evidence_provider import HardwareProvider
from chutes_subnet.attestation.providers.qgs import (
    QgsClient,
    QgsError,
    build_get_quote_request,
    parse_get_quote_response,
    parse_qgs_address,
)
from chutes_subnet.attestation.providers.tdx_guest import (
    TDREPORT_REPORTDATA_OFFSET,
    TDX_CMD_GET_REPORT0,
    TdxGuestDeviceProvider,
    get_tdreport,
)
from chutes_subnet.attestation.simulator.device import SimulatedDevice
from chutes_subnet.attestation.verify.binding import build_report_data
from chutes_subnet.attestation.verify.policy import Policy, measure_simulated_profile
from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.errors import AttestationError

HOTKEY = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
DEVICE = SimulatedDevice(b"legacy-tdx-test", gpu_count=0)


def fake_ioctl(fd: int, request: int, buf: bytearray) -> int:
    """What the TDX module does: copy reportdata into REPORTMACSTRUCT of the TDREPORT."""
    assert request == TDX_CMD_GET_REPORT0 and len(buf) == 64 + 1024
    report = bytearray(os.urandom(1024))
    report[TDREPORT_REPORTDATA_OFFSET:TDREPORT_REPORTDATA_OFFSET + 64] = buf[:64]
    buf[64:] = report
    return 0


def resp(quote: bytes, *, error: int = 0, kind: int = 1, major: int = 1, selected: bytes = b"",
         size_delta: int = 0) -> bytes:
    size = 24 + len(selected) + len(quote) + size_delta
    return (struct.pack("<HHIII", major, 0, kind, size, error)
            + struct.pack("<II", len(selected), len(quote)) + selected + quote)


class FakeQgs(socketserver.ThreadingTCPServer):
    """Speaks the QGS framing on 127.0.0.1; ``mode`` picks the answer."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "ok"
        self.requests: list[bytes] = []

    @property
    def address(self) -> str:
        return f"tcp:127.0.0.1:{self.server_address[1]}"


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: FakeQgs = self.server  # type: ignore[assignment]
        sock: socket.socket = self.request
        length = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))[0]
        msg = sock.recv(length, socket.MSG_WAITALL)
        server.requests.append(msg)
        major, _minor, kind, size, _err, report_size, id_size = struct.unpack_from("<HHIIIII", msg)
        assert (major, kind, size, id_size) == (1, 0, len(msg), 0)
        report = msg[24:24 + report_size]
        rd = report[TDREPORT_REPORTDATA_OFFSET:TDREPORT_REPORTDATA_OFFSET + 64]
        mode = server.mode
        if mode == "silent":
            threading.Event().wait(3)
            return
        if mode == "close":
            return
        if mode == "huge":
            sock.sendall(struct.pack(">I", 1 << 30))
            return
        body = {
            "ok": lambda: resp(DEVICE.quote(rd)),
            "other_rd": lambda: resp(DEVICE.quote(bytes(64))),
            "error": lambda: resp(b"", error=0x12006),
            "garbage_quote": lambda: resp(b"not a quote"),
            "bad_sizes": lambda: resp(DEVICE.quote(rd), size_delta=4),
        }[mode]()
        sock.sendall(struct.pack(">I", len(body)) + body)


@pytest.fixture()
def qgs() -> Iterator[FakeQgs]:
    server = FakeQgs()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture()
def device(tmp_path: Path) -> Path:
    path = tmp_path / "tdx_guest"
    path.write_bytes(b"")
    return path


def test_ioctl_number_matches_uapi_header():
    assert TDX_CMD_GET_REPORT0 == 0xC4405401


def test_tdreport_via_fake_device(device):
    rd = os.urandom(64)
    report = get_tdreport(rd, device, ioctl=fake_ioctl)
    assert len(report) == 1024 and report[128:192] == rd


def test_device_errors_are_clear(device, tmp_path):
    with pytest.raises(AttestationError, match="missing"):
        get_tdreport(bytes(64), tmp_path / "absent", ioctl=fake_ioctl)

    def denied(path: str, flags: int) -> int:
        raise PermissionError(errno.EACCES, "denied")

    with pytest.raises(AttestationError, match="permission denied"):
        get_tdreport(bytes(64), device, opener=denied, ioctl=fake_ioctl)

    def eio(fd: int, request: int, buf: bytearray) -> None:
        raise OSError(errno.EIO, "io")

    with pytest.raises(AttestationError, match=r"ioctl .* failed \(EIO\)"):
        get_tdreport(bytes(64), device, ioctl=eio)
    # the real fcntl.ioctl on a regular file: ENOTTY, translated
    with pytest.raises(AttestationError, match=r"ioctl .* failed \(ENOTTY\)"):
        get_tdreport(bytes(64), device)
    with pytest.raises(AttestationError, match="does not carry"):
        get_tdreport(os.urandom(64), device, ioctl=lambda fd, r, b: 0)
    with pytest.raises(AttestationError, match="64 bytes"):
        get_tdreport(bytes(63), device, ioctl=fake_ioctl)


def test_quote_from_fake_qgs_is_bound_and_verifies(device, qgs):
    provider = make_provider("tdx", tsm_dir=device.parent / "no-tsm", tdx_device=device,
                             qgs_address=qgs.address, qgs_timeout=5, gpus=False)
    assert isinstance(provider, HardwareProvider) and isinstance(provider.tdx, TdxGuestDeviceProvider)
    with pytest.raises(AttestationError, match="ENOTTY"):  # the real ioctl on a plain file
        provider.collect(bytes(32), b"pk", HOTKEY)
    provider.tdx._ioctl = fake_ioctl
    nonce = os.urandom(32)
    evidence = provider.collect(nonce, b"pk", HOTKEY)
    assert evidence.simulated is False and evidence.gpu_evidence == []
    assert parse_quote(evidence.tdx_quote).report.report_data == build_report_data(nonce, b"pk", HOTKEY)
    request = qgs.requests[-1]
    assert len(request) == 24 + 1024
    policy = Policy.development().with_profiles(measure_simulated_profile(gpu_count=0))
    verdict = Verifier(policy, dangerous_accept_simulated_tee=True).verify(
        evidence, nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY)
    assert "binding_mismatch" not in verdict.reason_codes
    assert not any(c.startswith("quote") for c in verdict.reason_codes)


@pytest.mark.parametrize("mode, match", [
    ("error", r"invalid message size \(0x12006\)"),
    ("garbage_quote", "malformed quote"),
    ("bad_sizes", "size field disagrees"),
    ("other_rd", "different report_data"),
    ("close", "closed the connection"),
    ("huge", "announced a response"),
])
def test_qgs_failures(device, qgs, mode, match):
    qgs.mode = mode
    provider = TdxGuestDeviceProvider(device, QgsClient(qgs.address, timeout=5), ioctl=fake_ioctl)
    with pytest.raises(AttestationError, match=match):
        provider.quote(os.urandom(64))


def test_qgs_timeout_and_unreachable(device, qgs):
    qgs.mode = "silent"
    with pytest.raises(QgsError, match=r"timed out after 0\.3 s"):
        QgsClient(qgs.address, timeout=0.3).get_quote(bytes(1024))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(QgsError, match="unreachable"):
        QgsClient(f"tcp:127.0.0.1:{closed}", timeout=1).get_quote(bytes(1024))


def test_qgs_over_unix_socket(tmp_path, device):
    path = tmp_path / "qgs.sock"
    server = socketserver.ThreadingUnixStreamServer(str(path), _Handler)
    server.mode, server.requests = "ok", []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        rd = os.urandom(64)
        quote = TdxGuestDeviceProvider(device, QgsClient(f"unix:{path}", timeout=5),
                                       ioctl=fake_ioctl).quote(rd)
        assert parse_quote(quote).report.report_data == rd
    finally:
        server.shutdown()
        server.server_close()


def test_make_provider_names_both_interfaces(tmp_path):
    with pytest.raises(AttestationError) as info:
        make_provider("tdx", tsm_dir=tmp_path / "tsm", tdx_device=tmp_path / "dev", gpus=False)
    assert "configfs-tsm" in str(info.value) and str(tmp_path / "dev") in str(info.value)
    with pytest.raises(AttestationError, match="unknown TDX provider options"):
        make_provider("tdx", tsm_dir=tmp_path, bogus=1, gpus=False)


def test_make_provider_prefers_configfs(tmp_path, device):
    provider = make_provider("tdx", tsm_dir=tmp_path, tdx_device=device, gpus=False)
    assert type(provider.tdx).__name__ == "TdxConfigfsProvider"  # type: ignore[attr-defined]


def test_qgs_address_parsing():
    assert str(parse_qgs_address("vsock:2:4050")) == "vsock:2:4050"
    assert parse_qgs_address("tcp:[::1]:4050").host == "::1"
    assert parse_qgs_address("unix:/run/qgs.sock").host == "/run/qgs.sock"
    for bad in ("vsock:host:1", "tcp:h:0", "tcp:h:70000", "udp:h:1", "unix:", "4050"):
        with pytest.raises(AttestationError, match="QGS"):
            parse_qgs_address(bad)


def test_request_layout():
    msg = build_get_quote_request(b"R" * 1024)
    assert struct.unpack_from("<HHIIIII", msg) == (1, 0, 0, 1048, 0, 1024, 0)
    assert msg[24:] == b"R" * 1024


def test_response_parser_accepts_selected_id():
    assert parse_get_quote_response(resp(b"QUOTE", selected=b"id")) == b"QUOTE"
    for bad, match in [(resp(b"Q", kind=0), "message type"), (resp(b"Q", major=2), "version"),
                       (resp(b""), "empty quote"), (resp(b"Q", error=0x99), "unknown error"),
                       (resp(b"Q")[:20], "size field"), (b"\x01", "shorter")]:
        with pytest.raises(QgsError, match=match):
            parse_get_quote_response(bad)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_response_parser_fuzz_raw(data):
    try:
        quote = parse_get_quote_response(data)
    except QgsError:
        return
    assert quote and len(quote) <= len(data) - 24


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.binary(max_size=16), st.integers(0, 2**32 - 1),
       st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_response_parser_fuzz_structured(quote, selected, error, id_size, quote_size):
    good = resp(quote, selected=selected, error=error)
    if error == 0:
        assert parse_get_quote_response(good) == quote
    else:
        with pytest.raises(QgsError) as info:
            parse_get_quote_response(good)
        assert info.value.error_code == error
    forged = good[:16] + struct.pack("<II", id_size, quote_size) + good[24:]
    try:
        out = parse_get_quote_response(forged)
    except QgsError:
        return
    assert error == 0 and id_size + quote_size == len(selected) + len(quote) and len(out) == quote_size
