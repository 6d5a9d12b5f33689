"""Embedded servers for `sluice dev` and the test suite (real processes, started on demand).

Each submodule owns one server; nothing is imported here so that using one embedded server never
pulls in the optional dependencies of another.
"""
