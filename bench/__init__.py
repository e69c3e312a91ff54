"""Candor's benchmarks: `python -m bench [--quick]` runs them all; each runs alone as
`python -m bench.<name>` from the repository root. Shared machinery is in `bench.harness`."""
