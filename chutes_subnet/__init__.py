"""chutes-subnet: attested, end-to-end-encrypted LLM inference on a Bittensor subnet."""

__version__ = "0.1.0"
