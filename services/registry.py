"""The deployable services: name → module exposing `async def run(settings, stop)`."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from typing import Protocol

from shared.settings import Settings

SERVICES: dict[str, str] = {
    "api": "services.api.service",
    "executor": "services.executor.service",
    "scheduler": "services.scheduler.service",
    "kafka-listener": "services.kafka_listener.service",
    "storage-listener": "services.storage_listener.service",
    "notifier": "services.notifier.service",
}
# Client sub-commands live next to the service they talk about; each module has `register`.
COMMAND_MODULES: tuple[str, ...] = (
    "services.api.commands",
    "services.scheduler.commands",
    "services.kafka_listener.commands",
    "services.storage_listener.commands",
    "services.notifier.commands",
    "services.api.replay_commands",
)

ServiceRun = Callable[[Settings, asyncio.Event], Awaitable[None]]


class _ServiceModule(Protocol):
    run: ServiceRun


def load_service(name: str) -> ServiceRun:
    """Import a service's `run`; an unknown name is a ValueError listing the known ones."""
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}")
    module: _ServiceModule = importlib.import_module(SERVICES[name])
    return module.run
