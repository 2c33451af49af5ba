"""Benchmarks: each measures against a baseline in the same run and prints both (see bench/README.md)."""
