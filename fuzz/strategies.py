"""Hypothesis strategies over a target's seeds: byte mutations plus plain random bytes."""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = ["mutated", "inputs_for"]


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with a few flips, truncations, splices, insertions or u32 overwrites."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=16))
            continue
        op = draw(st.sampled_from(("flip", "truncate", "splice", "insert", "u32", "dup")))
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "splice":
            data[pos : pos + draw(st.integers(0, 64))] = draw(st.binary(max_size=64))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif op == "u32":
            data[pos : pos + 4] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "little")
        else:
            end = min(len(data), pos + draw(st.integers(1, 64)))
            data[pos:pos] = data[pos:end]
    return bytes(data)


def inputs_for(seeds: list[bytes], max_random: int = 2048) -> st.SearchStrategy[bytes]:
    """Mutations of each seed, the seeds themselves, and unstructured bytes."""
    parts: list[st.SearchStrategy[bytes]] = [st.binary(max_size=max_random)]
    parts += [mutated(s) for s in seeds]
    parts.append(st.sampled_from(seeds))
    return st.one_of(*parts)
