"""Attestation: the trust anchor of chutes-subnet, in four parts by job.

* :mod:`.verify` — pure verification (validator, gateway, client): quote parsing, the
  DCAP adapter, GPU/SPDM evidence, RIMs, the RTMR3 event log and workload manifest,
  the operator :class:`~.verify.policy.Policy`, the report_data binding, signed
  statements, and the :class:`~.verify.verifier.Verifier` pipeline returning a frozen
  :class:`~.verify.reasons.Verdict`. No network, no devices; collateral and OCSP
  answers come from injected sources.
* :mod:`.fetch` — those sources: DCAP collateral from a PCCS/PCS with a disk cache
  (:mod:`.fetch.pccs`) and GPU certificate revocation over OCSP
  (:mod:`.fetch.ocsp_client`).
* :mod:`.providers` — miner side: evidence from real TDX (configfs-tsm, or
  ``/dev/tdx_guest`` plus the host QGS) and NVIDIA GPUs, RTMR3 workload measurement,
  and :func:`~.providers.choose.make_provider`.
* :mod:`.simulator` — the INSECURE simulated TD and GPUs for development.

Dependencies point one way: ``fetch``, ``providers`` and ``simulator`` import ``verify``;
``simulator`` imports ``providers``' interfaces; ``verify`` imports none of them.
Packages re-export nothing: an import names the module that does the job. See
``docs/attestation.md``.
"""
