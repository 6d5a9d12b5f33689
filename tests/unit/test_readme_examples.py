"""Spec examples of the README and the references are valid: a newcomer copies them as they are."""

from __future__ import annotations

import re
from pathlib import Path

from shared import spec_yaml
from shared.models.notifications import HTTP_CHANNELS, NotifyRule
from shared.models.workflows import WorkflowSpec

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def section(title: str) -> str:
    text = README.read_text("utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_notifications_example_is_a_valid_workflow_with_one_rule_per_channel() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", section("Notifications"), re.S)
    assert len(blocks) == 1
    spec = WorkflowSpec.model_validate(spec_yaml.load(blocks[0]))
    assert spec.policy.sla_s == 3600
    channels = [rule.channel for rule in spec.policy.notify]
    assert sorted(channels) == sorted({*HTTP_CHANNELS, "email"})
    assert [rule.on for node in spec.nodes for rule in node.notify] == [["retry"]]


def test_the_console_section_names_every_page_of_the_navigation() -> None:
    base = ROOT / "services" / "api" / "console" / "templates" / "base.html"
    pages = re.findall(r'<a href="/[^"]*"[^>]*>([^<]+)</a>', base.read_text("utf-8"))
    assert "Workflows" in pages and "Notifications" in pages
    table = section("Console and CLI at a glance")
    for page in pages:
        if page != "API":  # Swagger UI, linked from the tour
            assert page in table, f"README's page table does not mention {page!r}"


def test_the_channel_examples_of_the_notifications_reference_are_valid_rules() -> None:
    text = (ROOT / "docs" / "notifications.md").read_text("utf-8")
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "notify:" in b]
    rules = [NotifyRule.model_validate(r) for r in spec_yaml.load(block)["policy"]["notify"]]
    assert sorted(r.channel for r in rules) == sorted({*HTTP_CHANNELS, "email"})
