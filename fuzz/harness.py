"""Coverage-guided entry point (atheris / libFuzzer) for one target.

Usage::

    python -m fuzz.harness TARGET [libFuzzer flags] [CORPUS_DIR ...]
    python -m fuzz.harness tdx_quote -runs=100000 -max_len=20000 /tmp/corpus

``chutes_subnet`` is instrumented for coverage; the libraries it calls are not.
A crash is any exception the target does not expect (see :class:`fuzz.targets.Target`);
libFuzzer then writes the input to ``crash-<sha1>`` (``-artifact_prefix``) and stops.
Replay one with ``python -m fuzz.harness TARGET crash-<sha1>``.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Run ``argv[1]``'s target under atheris with the remaining libFuzzer arguments."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1].startswith("-"):
        raise SystemExit("usage: python -m fuzz.harness TARGET [libFuzzer flags] [corpus ...]")
    import atheris

    with atheris.instrument_imports(include=["chutes_subnet"]):
        from fuzz.targets import TARGETS

    name = argv.pop(1)
    if name not in TARGETS:
        raise SystemExit(f"unknown target {name!r}; one of: {', '.join(sorted(TARGETS))}")
    target = TARGETS[name]
    target.seeds()  # build fixed material before the clock of the first input starts
    atheris.Setup(argv, target.check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
