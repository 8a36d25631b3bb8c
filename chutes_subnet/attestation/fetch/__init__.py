"""What the verifier reads from the network, fetched and cached for it (validator side).

Each class implements a protocol of :mod:`chutes_subnet.attestation.verify` and is
injected into the :class:`~chutes_subnet.attestation.verify.verifier.Verifier`.
"""
