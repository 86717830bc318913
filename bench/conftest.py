"""Benchmarks: outside the default test run (`make bench`), warm-up first, fixed inputs."""
