"""TDX quotes through the Linux configfs-tsm interface (kernel >= 6.7)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from chutes_subnet.errors import AttestationError

__all__ = ["TSM_REPORT_DIR", "TdxConfigfsProvider"]

log = logging.getLogger(__name__)
TSM_REPORT_DIR = Path("/sys/kernel/config/tsm/report")


class TdxConfigfsProvider:
    """TDX quotes through the Linux configfs-tsm interface (kernel >= 6.7).

    Each call creates a report directory, writes ``inblob`` (the 64-byte
    report_data), reads ``outblob`` (the quote) and checks ``generation`` did not
    move in between (another writer would have raced us), then removes the directory.
    Older kernels use :class:`TdxGuestDeviceProvider` (``/dev/tdx_guest`` + QGS).
    """

    def __init__(self, tsm_dir: str | Path = TSM_REPORT_DIR) -> None:
        self.tsm_dir = Path(tsm_dir)
        if not self.tsm_dir.is_dir():
            raise AttestationError(
                f"no configfs-tsm TDX quote interface at {self.tsm_dir}; is this a TDX guest? "
                "for development only, run the miner with --tee simulated (forgeable evidence)")

    def quote(self, report_data: bytes) -> bytes:
        """One quote over ``report_data`` (64 bytes)."""
        entry = Path(tempfile.mkdtemp(prefix="chutes-", dir=self.tsm_dir))
        try:
            gen_before = (entry / "generation").read_text().strip()
            (entry / "inblob").write_bytes(report_data)
            quote = (entry / "outblob").read_bytes()
            gen_after = (entry / "generation").read_text().strip()
            if int(gen_after) != int(gen_before) + 1:
                raise AttestationError("configfs-tsm report raced with another writer")
            if not quote:
                raise AttestationError("configfs-tsm returned an empty quote")
            return quote
        except (OSError, ValueError) as exc:
            raise AttestationError("TDX quote generation via configfs-tsm failed") from exc
        finally:
            try:
                os.rmdir(entry)
            except OSError:
                log.warning("could not remove configfs-tsm entry %s", entry)
