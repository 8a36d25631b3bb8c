"""Validator settings: one frozen dataclass the CLI fills from flags and env vars.

Every knob that changes a score is here, so a round can be reproduced from the
config plus the round seed stored with its results.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chutes_subnet.inference import DEFAULT_MODEL_ID, DEFAULT_SEED
from chutes_subnet.wire.protocol import MAX_FLEET_INSTANCES

__all__ = ["ScoringConfig", "BenchmarkConfig", "ValidatorConfig"]


@dataclass(frozen=True)
class ScoringConfig:
    """Weights of the scoring formula (see docs/validator.md, "Scoring")."""

    #: share of the benchmark quality given to throughput; the rest goes to TTFT
    throughput_weight: float = 0.7
    #: exponent on the success rate: 2 makes flaky miners lose fast
    success_exponent: float = 2.0
    #: EMA smoothing: new = alpha * round + (1 - alpha) * previous
    ema_alpha: float = 0.3
    #: share of the round score taken from organic traffic when a source is present
    organic_weight: float = 0.0
    #: reason codes that wipe the EMA (cheating or untrusted hardware), not just the round
    reset_on: frozenset[str] = frozenset({"attestation", "wrong_output"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.throughput_weight <= 1.0:
            raise ValueError("throughput_weight must be in [0, 1]")
        if not 0.0 < self.ema_alpha <= 1.0:
            raise ValueError("ema_alpha must be in (0, 1]")
        if not 0.0 <= self.organic_weight <= 1.0:
            raise ValueError("organic_weight must be in [0, 1]")
        if self.success_exponent < 1.0:
            raise ValueError("success_exponent must be >= 1")


@dataclass(frozen=True)
class BenchmarkConfig:
    """The encrypted benchmark each attested miner runs every round."""

    #: prompts sent to each miner per round (all streamed, all encrypted)
    prompts_per_miner: int = 4
    #: completion budget per prompt
    max_tokens: int = 64
    #: prompts per miner recomputed locally for the embedded model (exact match)
    verify_sample: int = 2
    #: embedded model identity: answers for this model id are recomputed with this seed
    embedded_model: str = DEFAULT_MODEL_ID
    embedded_seed: int = DEFAULT_SEED
    #: upstream models: one prompt is sent twice and must come back identical
    canary_repeats: int = 2
    #: a miner serving a model that is neither the embedded one nor in the validator's
    #: reference book fails as ``unverified`` (its tokens cannot be counted or checked)
    require_reference: bool = True

    def __post_init__(self) -> None:
        if self.prompts_per_miner < 1 or not 1 <= self.max_tokens <= 4096:
            raise ValueError("prompts_per_miner >= 1 and max_tokens in 1..4096 required")
        if not 0 <= self.verify_sample <= self.prompts_per_miner:
            raise ValueError("verify_sample must be in 0..prompts_per_miner")


@dataclass(frozen=True)
class ValidatorConfig:
    """Everything a :class:`~chutes_subnet.validator.Validator` needs besides its I/O."""

    #: miners evaluated per round (0 = every miner with an axon)
    sample_size: int = 0
    #: miners evaluated at the same time
    concurrency: int = 16
    #: seconds for one HTTP exchange (attest, or one benchmark request until its last byte)
    timeout: float = 30.0
    #: connect timeout towards miners
    connect_timeout: float = 5.0
    #: accept simulated TEE evidence (development only; never on a real network)
    dangerous_accept_simulated_tee: bool = False
    #: seconds a verified instance key is trusted without a new challenge
    attestation_ttl: float = 900.0
    #: probability that a cached (still valid) key is re-challenged in a round anyway
    rechallenge_probability: float = 0.25
    #: blocks between two rounds (the loop aligns rounds to the chain)
    round_blocks: int = 25
    #: seconds between chain polls while waiting for the next round
    poll_interval: float = 6.0
    #: ``version_key`` of weight submissions
    version_key: int = 1
    #: submit weights at the end of a round when the rate limit allows
    set_weights: bool = True
    #: largest share one uid may get in the *planned* weights; None (default) = no clip
    #: here. Leave it None on chain: SetWeights clips at the subnet's max_weight_limit
    #: itself, and clip_to_max_weight is not idempotent, so clipping here too clips twice.
    max_weight: float | None = None
    #: uid weighted 1.0 when no miner has a positive score (None: set nothing). uid 0 is
    #: the subnet owner's hotkey on dynamic-TAO subnets, so this burns the miners' share
    #: instead of letting the validator's weights age out (docs/validator.md)
    fallback_uid: int | None = 0
    #: skip the validator's own uid and other validator-permit holders without an axon
    evaluate_validators: bool = False
    #: instances of one uid's fleet list (GET /fleet) evaluated per round, in its order
    max_instances_per_uid: int = 16
    #: instances of one uid evaluated at the same time (within ``concurrency``)
    instance_concurrency: int = 4
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)

    def __post_init__(self) -> None:
        if self.sample_size < 0 or self.concurrency < 1:
            raise ValueError("sample_size >= 0 and concurrency >= 1 required")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeouts must be > 0")
        if self.attestation_ttl <= 0:
            raise ValueError("attestation_ttl must be > 0")
        if not 0.0 <= self.rechallenge_probability <= 1.0:
            raise ValueError("rechallenge_probability must be in [0, 1]")
        if self.round_blocks < 1 or self.poll_interval <= 0:
            raise ValueError("round_blocks >= 1 and poll_interval > 0 required")
        if self.fallback_uid is not None and self.fallback_uid < 0:
            raise ValueError("fallback_uid must be >= 0 (None disables the fallback)")
        if not 1 <= self.max_instances_per_uid <= MAX_FLEET_INSTANCES:
            raise ValueError(f"max_instances_per_uid must be in 1..{MAX_FLEET_INSTANCES}")
        if self.instance_concurrency < 1:
            raise ValueError("instance_concurrency must be >= 1")
        if self.max_weight is not None and not 0.0 < self.max_weight <= 1.0:
            raise ValueError("max_weight must be in (0, 1]")
