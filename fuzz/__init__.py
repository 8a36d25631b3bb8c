"""Fuzzing for chutes-subnet's untrusted-input parsers.

:mod:`fuzz.targets` holds one :class:`~fuzz.targets.Target` per parser or decoder: a
function of raw bytes that may raise only the project's own error types (or
``pydantic.ValidationError`` for schema models); anything else is a crash. The same
targets drive three engines:

* ``python -m fuzz.harness TARGET [libFuzzer flags]`` — coverage-guided (atheris);
* ``python -m fuzz.run`` — runs every target for N inputs and prints a table;
* ``tests/security/test_fuzz_targets.py`` — short hypothesis runs in CI.

See ``docs/security.md`` for the documented runs and their numbers.
"""
