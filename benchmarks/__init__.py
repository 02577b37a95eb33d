"""Benchmark scripts (run them as files); a package so that tests can import their cores."""
