"""Spec YAML: YAML 1.2 booleans, nothing constructed but plain data."""

from __future__ import annotations

import pytest
import yaml

from shared import spec_yaml
from shared.models.notifications import NotifyRule


def test_on_is_a_key_and_yes_no_off_are_text() -> None:
    assert spec_yaml.load("{on: [failure], enabled: yes, pw: no, mode: off}") == {
        "on": ["failure"],
        "enabled": "yes",
        "pw": "no",
        "mode": "off",
    }
    # What the default YAML 1.1 loader makes of the same rule: the key True.
    assert True in yaml.safe_load("{on: [failure]}")


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("True", True), ("FALSE", False), ("false", False), ("'true'", "true")],
)
def test_true_and_false_stay_booleans(text: str, value: object) -> None:
    assert spec_yaml.load(f"x: {text}") == {"x": value}


def test_a_notification_rule_in_yaml_validates() -> None:
    rule = NotifyRule.model_validate(
        spec_yaml.load("on: [failure]\nchannel: slack\nurl: https://hooks.slack.com/services/T/B/X")
    )
    assert rule.on == ["failure"]


def test_streams_and_numbers_and_dates_load_as_before() -> None:
    docs = list(spec_yaml.load_all("a: 1\n---\nb: 2026-12-01\n---\nc: 0x10\n"))
    assert docs == list(yaml.safe_load_all("a: 1\n---\nb: 2026-12-01\n---\nc: 0x10\n"))


def test_python_objects_are_refused() -> None:
    with pytest.raises(spec_yaml.YAMLError):
        spec_yaml.load("!!python/object/apply:os.system ['echo pwned']")
