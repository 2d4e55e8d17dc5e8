"""Benchmarks of the real server, run as a separate process over loopback: `python -m bench`."""
