"""Sandbox rules that need no process: which variables go, which user nodes run as."""

from __future__ import annotations

import pwd

import pytest

from services.executor.sandbox import SECRET_VARIABLES, node_user, strip_secrets
from shared.settings import SettingsError


def test_strip_secrets_removes_credentials_and_keeps_the_rest() -> None:
    env = {
        "SLUICE_DATABASE_URL": "postgresql://u:pw@h/db",
        "SLUICE_BOOTSTRAP_TOKEN": "t",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "SLUICE_LEASE_S": "30",
        "PATH": "/bin",
    }
    removed = strip_secrets(env)
    assert sorted(removed) == sorted(
        [
            "SLUICE_DATABASE_URL",
            "SLUICE_BOOTSTRAP_TOKEN",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ]
    )
    assert env == {"SLUICE_LEASE_S": "30", "PATH": "/bin"}
    assert set(removed) <= set(SECRET_VARIABLES)


def test_nodes_run_as_the_executor_s_uid_unless_it_is_root() -> None:
    assert node_user("nobody", euid=1000) is None
    assert node_user(None, euid=0) is None


def test_a_root_executor_resolves_the_node_user() -> None:
    user = node_user("nobody", euid=0)
    entry = pwd.getpwnam("nobody")
    assert user is not None
    assert (user.name, user.ids, user.home) == (
        "nobody",
        (entry.pw_uid, entry.pw_gid),
        entry.pw_dir,
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no-such-user-xyz", "SLUICE_NODE_USER: no user named 'no-such-user-xyz'"),
        ("root", "SLUICE_NODE_USER: must not be root"),
    ],
)
def test_a_bad_node_user_names_the_variable(name: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        node_user(name, euid=0)
