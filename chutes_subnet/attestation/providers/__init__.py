"""Miner-side evidence providers: real TDX quotes, NVIDIA GPU evidence, RTMR3 measurement."""
