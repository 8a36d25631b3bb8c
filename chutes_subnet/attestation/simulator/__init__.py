"""The simulated TD and GPUs for local development. INSECURE BY DESIGN.

Its evidence is signed with keys anybody can derive; a verifier accepts it only with
``dangerous_accept_simulated_tee``. What checking it takes lives in
:mod:`chutes_subnet.attestation.verify.simulated_tee`, so the verifier never imports
this package.
"""
