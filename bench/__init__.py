"""Benchmarks of DESIGN 13; each scenario prints JSON lines (`python -m bench.<scenario>`)."""
