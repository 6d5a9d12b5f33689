"""What `sluice apply` takes for a trigger: every trigger type the models know, and nothing else."""

from __future__ import annotations

from pathlib import Path

from services.api import commands
from services.dev import examples
from shared.models.triggers import TRIGGER_TYPES


def test_the_cli_knows_every_trigger_type_of_the_models() -> None:
    # The CLI keeps its own copy (it does not import the models): a new trigger type must be
    # added there too, or `sluice apply` sends its specs to the workflows endpoint.
    assert set(commands.TRIGGER_TYPES) == set(TRIGGER_TYPES) == {"kafka", "s3", "workflow"}


def test_every_trigger_type_is_taken_for_a_trigger() -> None:
    specs = [
        {"name": "w", "type": "triggered", "trigger": "done"},
        {"name": "done", "type": "workflow", "workflow": "up"},
        {"name": "up", "type": "scheduled"},
        {"name": "k", "type": "kafka", "topic": "t"},
    ]
    assert [s["name"] for s in specs if commands._is_trigger(s)] == ["done", "k"]
    assert [s["name"] for s in specs if not commands._is_trigger(s)] == ["w", "up"]


def test_dev_examples_load_triggers_first(tmp_path: Path) -> None:
    directory = tmp_path
    (directory / "a.yaml").write_text(
        "name: w\ntype: triggered\ntrigger: done\n---\nname: done\ntype: workflow\nworkflow: up\n"
    )
    assert [d["name"] for d in examples.read_specs(directory)] == ["done", "w"]
