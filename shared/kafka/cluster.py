"""Which Kafka cluster a trigger reads from, and the client settings of a `kafka` connection. Pure.

A Kafka trigger without `connection` reads from the platform's cluster (`SLUICE_KAFKA_BOOTSTRAP`,
cluster ``default``). One naming a workspace connection of kind `kafka` reads from that cluster,
known to the listener, intake and the audit as ``<workspace id>/<connection name>``: connections
are workspace-scoped, so the same name in two workspaces is two clusters (and two consumer
groups), and a message read through one workspace's connection can only reach that workspace's
triggers.

A `kafka` connection holds, in `config`: `bootstrap_servers` (required, ``host:port[,...]``),
`security_protocol` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), `sasl_mechanism` (PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512), `sasl_username`, `ssl_cafile`; in `secrets`: `sasl_password`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, get_args

from pydantic import SecretStr

from shared.settings import KafkaSettings

DEFAULT_CLUSTER: Final = "default"
_CONFIG_KEYS = frozenset(
    {"bootstrap_servers", "security_protocol", "sasl_mechanism", "sasl_username", "ssl_cafile"}
)
_SECRET_KEYS = frozenset({"sasl_password"})


class KafkaConnectionError(ValueError):
    """A `kafka` connection that cannot be used; the message names the connection and field."""


def cluster_of(workspace_id: int, connection: str | None) -> str | None:
    """The cluster key of a trigger: None for the platform's cluster, else workspace/connection."""
    return None if connection is None else f"{workspace_id}/{connection}"


def cluster_label(cluster: str | None) -> str:
    """How logs, metrics and readiness name a cluster."""
    return DEFAULT_CLUSTER if cluster is None else cluster


def connection_settings(
    base: KafkaSettings, name: str, config: Mapping[str, Any], secrets: Mapping[str, str]
) -> KafkaSettings:
    """The platform's Kafka settings with the connection's cluster and credentials instead.

    Group id, fetch wait and batch size stay the platform's. Raises ``KafkaConnectionError``
    naming the field; the message never holds a secret's value.
    """
    unknown = sorted(set(config) - _CONFIG_KEYS) + sorted(set(secrets) - _SECRET_KEYS)
    if unknown:
        raise KafkaConnectionError(
            f"kafka connection {name!r}: unknown field {unknown[0]!r} (config: "
            f"{', '.join(sorted(_CONFIG_KEYS))}; secrets: {', '.join(sorted(_SECRET_KEYS))})"
        )
    bootstrap = config.get("bootstrap_servers")
    if not isinstance(bootstrap, str) or not bootstrap.strip():
        raise KafkaConnectionError(
            f"kafka connection {name!r}: config.bootstrap_servers must be 'host:port[,...]'"
        )
    fields = KafkaSettings.model_fields
    protocol = config.get("security_protocol", "PLAINTEXT")
    _check_choice(name, "security_protocol", protocol, fields["kafka_security_protocol"].annotation)
    mechanism = config.get("sasl_mechanism")
    if mechanism is not None:
        _check_choice(name, "sasl_mechanism", mechanism, fields["kafka_sasl_mechanism"].annotation)
    if str(protocol).startswith("SASL_") and mechanism is None:
        raise KafkaConnectionError(
            f"kafka connection {name!r}: config.sasl_mechanism must be set with {protocol}"
        )
    for key in ("sasl_username", "ssl_cafile"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise KafkaConnectionError(f"kafka connection {name!r}: config.{key} must be a string")
    password = secrets.get("sasl_password")
    return base.model_copy(
        update={
            "kafka_bootstrap": bootstrap,
            "kafka_security_protocol": protocol,
            "kafka_sasl_mechanism": mechanism,
            "kafka_sasl_username": config.get("sasl_username"),
            "kafka_sasl_password": None if password is None else SecretStr(password),
            "kafka_ssl_cafile": config.get("ssl_cafile"),
        }
    )


def _check_choice(name: str, key: str, value: object, annotation: Any) -> None:
    allowed = [a for arg in get_args(annotation) for a in (get_args(arg) or (arg,))]
    allowed = [a for a in allowed if isinstance(a, str)]
    if value not in allowed:
        raise KafkaConnectionError(
            f"kafka connection {name!r}: config.{key} must be one of {', '.join(allowed)}, "
            f"not {value!r}"
        )
