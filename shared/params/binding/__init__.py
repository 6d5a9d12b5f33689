"""Binding resolved parameters into node code without letting values become code."""

from __future__ import annotations

__all__ = ["BindingError"]


class BindingError(ValueError):
    """Node code in which a placeholder cannot be bound safely; the message says where and why."""
