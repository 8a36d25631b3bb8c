"""Miner side of workload identity: RTMR3 extension (sysfs, legacy ioctl, simulated),
the persisted event log, and ``chutes-subnet measure`` against the simulated TD."""

from __future__ import annotations

import hashlib
import json
import os
import struct

import pytest

from chutes_subnet.attestation.providers.rtmr import (
    TDREPORT_RTMR0_OFFSET,
    TDX_CMD_EXTEND_RTMR,
    RuntimeLog,
    SimulatedRtmr,
    SysfsRtmr,
    TdxGuestIoctlRtmr,
    rtmr_device,
)
from chutes_subnet.attestation.providers.tdx_guest import (
    TDREPORT_REPORTDATA_OFFSET,
    TDX_CMD_GET_REPORT0,
)
from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.attestation.verify.eventlog import RuntimeEvent, extend, replay, workload_event
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.manifest import WorkloadManifest
from chutes_subnet.attestation.verify.policy import Policy
from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.cli import main as cli_main
from chutes_subnet.errors import AttestationError

HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
D = "sha256:" + "cd" * 32


def manifest(**over) -> WorkloadManifest:
    fields = {"chute_id": "chute-a", "model_id": "org/m", "model_revision": "r1",
              "weights_digest": D, "tokenizer_digest": D, "engine": "vllm",
              "engine_version": "0.8.5", "image_digest": D, "dtype": "bfloat16",
              "quantization": "none", "max_context": 8192}
    fields.update(over)
    return WorkloadManifest(**fields)


# --- devices ------------------------------------------------------------------------

def test_ioctl_number_matches_the_kernel_macro():
    # _IOR('T', 3, struct tdx_extend_rtmr_req { __u8 data[48]; __u8 index; })
    assert TDX_CMD_EXTEND_RTMR == 0x80315403


class FakeSysfs:
    """A directory laid out like /sys/class/misc/tdx_guest/measurements, plus a writer
    that behaves like the kernel (a write of 48 bytes extends)."""

    def __init__(self, root, value=bytes(48), hex_format=False):
        self.root, self.hex_format = root, hex_format
        root.mkdir()
        self.set(value)

    def set(self, value):
        data = value.hex().encode() + b"\n" if self.hex_format else value
        (self.root / "rtmr3:sha384").write_bytes(data)


def test_sysfs_read_and_extend(tmp_path):
    fake = FakeSysfs(tmp_path / "m")
    dev = SysfsRtmr(fake.root)
    assert dev.read(3) == bytes(48)
    digest = hashlib.sha384(b"x").digest()
    dev.extend(3, digest)
    # a plain file stands in for the attribute: the written bytes are what the kernel got
    assert (fake.root / "rtmr3:sha384").read_bytes() == digest
    fake.hex_format = True
    fake.set(b"\x11" * 48)
    assert dev.read(3) == b"\x11" * 48
    with pytest.raises(AttestationError, match="48 bytes"):
        dev.extend(3, b"short")
    with pytest.raises(AttestationError, match="index"):
        dev.read(4)
    (fake.root / "rtmr3:sha384").write_bytes(b"garbage")
    with pytest.raises(AttestationError, match="unexpected format"):
        dev.read(3)
    with pytest.raises(AttestationError, match="no TDX RTMR sysfs"):
        SysfsRtmr(tmp_path / "absent")


class FakeTdxGuest:
    """The TDX guest device's two ioctls over simulated registers."""

    def __init__(self):
        self.regs = SimulatedRtmr()
        self.calls: list[int] = []

    def ioctl(self, fd, request, buf):
        self.calls.append(request)
        if request == TDX_CMD_EXTEND_RTMR:
            assert len(buf) == 49
            self.regs.extend(buf[48], bytes(buf[:48]))
        elif request == TDX_CMD_GET_REPORT0:
            report = bytearray(1024)
            report[TDREPORT_REPORTDATA_OFFSET:TDREPORT_REPORTDATA_OFFSET + 64] = buf[:64]
            for i in range(4):
                at = TDREPORT_RTMR0_OFFSET + 48 * i
                report[at:at + 48] = self.regs.read(i)
            buf[64:] = report
        else:
            raise OSError(25, "ENOTTY")
        return 0


def test_legacy_ioctl_extend_and_read_back(tmp_path):
    device = tmp_path / "tdx_guest"
    device.write_bytes(b"")
    fake = FakeTdxGuest()
    dev = TdxGuestIoctlRtmr(device, ioctl=fake.ioctl)
    digest = hashlib.sha384(b"y").digest()
    dev.extend(3, digest)
    assert dev.read(3) == extend(bytes(48), digest)
    assert dev.read(2) == bytes(48)
    assert fake.calls[0] == TDX_CMD_EXTEND_RTMR

    def broken(fd, request, buf):
        raise OSError(25, "Inappropriate ioctl for device")
    with pytest.raises(AttestationError, match="TDX_CMD_EXTEND_RTMR failed"):
        TdxGuestIoctlRtmr(device, ioctl=broken).extend(3, digest)


def test_rtmr_device_prefers_sysfs(tmp_path):
    device = tmp_path / "tdx_guest"
    device.write_bytes(b"")
    FakeSysfs(tmp_path / "m")
    assert isinstance(rtmr_device(tmp_path / "m", device), SysfsRtmr)
    assert isinstance(rtmr_device(tmp_path / "none", device), TdxGuestIoctlRtmr)
    with pytest.raises(AttestationError, match="no runtime RTMR interface"):
        rtmr_device(tmp_path / "none", tmp_path / "no-device")


# --- the event log kept in step with the register ---------------------------------------

def test_runtime_log_measures_once_and_persists(tmp_path):
    regs = SimulatedRtmr()
    path = tmp_path / "run" / "rtmr3.jsonl"
    log = RuntimeLog(regs, path)
    m = manifest()
    event = log.measure_workload(m)
    assert event == workload_event(m)
    assert regs.read(3) == replay([event])
    lines = path.read_text().splitlines()
    assert [json.loads(x) for x in lines] == [event.to_wire()]
    # a restarted miner (new RuntimeLog, same TD and file) with the same release: no-op
    again = RuntimeLog(regs, path)
    again.measure_workload(m)
    assert regs.read(3) == replay([event]) and len(path.read_text().splitlines()) == 1
    # another release in the same TD is refused: RTMR3 cannot be rewound
    with pytest.raises(AttestationError, match="already measured another workload"):
        again.measure_workload(manifest(model_revision="r2"))
    assert regs.read(3) == replay([event])


def test_runtime_log_refuses_a_register_out_of_step(tmp_path):
    regs = SimulatedRtmr()
    regs.extend(3, hashlib.sha384(b"someone else").digest())  # an unlogged extension
    with pytest.raises(AttestationError, match="does not match the register"):
        RuntimeLog(regs, tmp_path / "log.jsonl").measure_workload(manifest())
    path = tmp_path / "corrupt.jsonl"
    path.write_text("{not json\n")
    with pytest.raises(AttestationError, match="corrupt"):
        RuntimeLog(SimulatedRtmr(), path).measure_workload(manifest())


def test_runtime_log_keeps_prior_events(tmp_path):
    """A TD whose RTMR3 already holds runtime events (a dstack CVM) keeps them first."""
    regs = SimulatedRtmr()
    boot = RuntimeEvent.runtime("system-ready", b"")
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(boot.to_wire()) + "\n")
    regs.extend(3, boot.digest)
    RuntimeLog(regs, path).measure_workload(manifest())
    assert regs.read(3) == replay([boot, workload_event(manifest())])


def test_register_that_does_not_move_is_detected():
    class Stuck(SimulatedRtmr):
        def extend(self, index, digest):  # the write "succeeds" but nothing changes
            return None
    with pytest.raises(AttestationError, match="did not move"):
        RuntimeLog(Stuck()).measure_workload(manifest())


# --- simulated TD end to end, and `measure` ---------------------------------------------

def test_simulated_td_quote_reports_the_measured_rtmr3_and_verifies():
    provider = SimulatedProvider(seed=b"w", gpu_count=1)
    m = manifest()
    nonce = os.urandom(32)
    before = parse_quote(provider.collect(nonce, b"pk", HOTKEY).tdx_quote).report.rtmr[3]
    assert before == bytes(48)
    provider.measure_workload(m)
    ev = provider.collect(nonce, b"pk", HOTKEY)
    assert ev.event_log == [workload_event(m).to_wire()] and ev.workload_manifest == m.to_dict()
    rtmr3 = parse_quote(ev.tdx_quote).report.rtmr[3]
    assert rtmr3 == replay([workload_event(m)])
    wire = Evidence.from_wire(json.loads(json.dumps(ev.to_wire())))
    policy = Policy.default().with_simulated(gpu_count=1).with_manifests(m)
    verdict = Verifier(policy, dangerous_accept_simulated_tee=True).verify(
        wire, nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY, chute_id="chute-a")
    assert verdict.ok, verdict.reasons
    assert verdict.manifest_sha384 == m.sha384().hex()
    unpublished = Verifier(Policy.default().with_simulated(gpu_count=1),
                           dangerous_accept_simulated_tee=True).verify(
        wire, nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY, chute_id="chute-a")
    assert unpublished.reason_codes == ("manifest_not_published",)
    wrong = Verifier(policy, dangerous_accept_simulated_tee=True).verify(
        wire, nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY, chute_id="chute-b")
    assert wrong.reason_codes == ("manifest_wrong_chute",)


def test_measure_cli_prints_what_the_simulated_td_reports(tmp_path, capsys):
    m = manifest()
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(m.to_dict(), indent=1))
    assert cli_main(["measure", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    provider = SimulatedProvider(seed=b"m", gpu_count=0)
    provider.measure_workload(m)
    quote = provider.collect(bytes(32), b"pk", HOTKEY).tdx_quote
    assert out["rtmr3"] == parse_quote(quote).report.rtmr[3].hex()
    assert out["manifest_sha384"] == m.sha384().hex()
    assert cli_main(["measure", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"rtmr3           = {out['rtmr3']}" in text and "[[manifests]]" in text
    # the printed table is a valid policy entry
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text("version = 1\n" + text.split("# policy file entry:\n")[1])
    assert Policy.load(policy_file).manifests == (m,)


def test_measure_cli_after_prior_events_and_model_dir(tmp_path, capsys):
    m = manifest()
    path = tmp_path / "manifest.json"
    path.write_bytes(m.canonical_bytes())
    boot = RuntimeEvent.runtime("system-ready", b"")
    events = tmp_path / "events.json"
    events.write_text(json.dumps([boot.to_wire()]))
    assert cli_main(["measure", str(path), "--after", str(events), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rtmr3"] == replay(
        [boot, workload_event(m)]).hex()
    model = tmp_path / "model"
    model.mkdir()
    (model / "tokenizer.json").write_text("{}")
    (model / "w.bin").write_bytes(struct.pack("<I", 7))
    assert cli_main(["measure", "--model-dir", str(model), "--json"]) == 0
    digests = json.loads(capsys.readouterr().out)
    assert set(digests) == {"weights_digest", "tokenizer_digest"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**m.to_dict(), "extra": 1}))
    assert cli_main(["measure", str(bad)]) == 1
    assert "unknown manifest fields" in capsys.readouterr().err
