"""Benchmarks of intake, latency and dispatch with their raw floors.

Each scenario prints JSON lines: `python -m bench.<scenario>`.
"""
