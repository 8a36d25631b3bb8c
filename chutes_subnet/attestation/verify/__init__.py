"""Pure attestation verification: evidence in, :class:`~.reasons.Verdict` out.

No network, no devices, no disk except reading packaged data files (the default
policy, NVIDIA's root) and files or directories a caller names (policy, RIMs,
manifests, a model directory to digest with :mod:`.merkle`).
Collateral and OCSP answers come from injected sources (:mod:`.collateral`,
:mod:`.ocsp`; fetching implementations in :mod:`chutes_subnet.attestation.fetch`).
"""
