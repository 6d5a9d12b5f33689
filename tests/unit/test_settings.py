"""Configuration errors stop the process with one line naming the variable."""

from __future__ import annotations

import pytest

from shared.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("SLUICE_API_PORT", "eighty", "valid integer"),
        ("SLUICE_API_PORT", "70000", "less than or equal"),
        ("SLUICE_LOG_FORMAT", "xml", "json"),
        ("SLUICE_TIMEZONE", "Mars/Olympus", "unknown time zone"),
        ("SLUICE_EXECUTOR_CONCURRENCY", "0", "greater than or equal"),
        ("SLUICE_KAFKA_SECURITY_PROTOCOL", "TLS", "PLAINTEXT"),
    ],
)
def test_bad_variable_is_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"invalid configuration: {variable}: ")
    assert reason in message


def test_defaults_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_WEBHOOK_TOKENS", " old , new ,")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    settings = load_settings()
    assert settings.api_port == 8080 and settings.webhook_port == 8081
    assert settings.webhook_token_list == ["old", "new"]
    assert settings.aws_secret_access_key is not None
    assert "s3cr3t" not in repr(settings)
