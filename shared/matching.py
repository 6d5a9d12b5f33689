"""Pure trigger matching: key globs, S3 event names, Kafka keys, JMESPath filters."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

import jmespath
import jmespath.exceptions
import jmespath.parser

from shared.models.triggers import (
    AnyTriggerSpec,
    KafkaTriggerSpec,
    S3TriggerSpec,
    WorkflowTriggerSpec,
)


@dataclass(frozen=True)
class Match:
    """The verdict of one trigger on one event; `reason` explains a non-match or an error."""

    matched: bool
    reason: str | None = None
    error: bool = False


MATCHED = Match(True)


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """Translate a key glob: `*` and `?` stay within one path segment, `**` crosses `/`."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                # `a/**/b` also matches `a/b`: the middle segments are optional.
                if i < n and pattern[i] == "/" and (i == 2 or pattern[i - 3] == "/"):
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2 if i + 1 < n and pattern[i + 1] in "!^" else i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\")
                out.append(f"[^/{body}]" if negate else f"[{body}]")
                i = end + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def glob_match(pattern: str, key: str) -> bool:
    """True when the whole object key matches the glob."""
    return compile_glob(pattern).fullmatch(key) is not None


def normalize_event_name(name: str) -> str:
    """`ObjectCreated:Put` and `s3:ObjectCreated:Put` are the same event."""
    return name if name.startswith("s3:") else f"s3:{name}"


def event_name_matches(patterns: list[str], name: str) -> bool:
    """Match an event name against names with an optional trailing `*` wildcard."""
    name = normalize_event_name(name)
    for pattern in patterns:
        if pattern == "*":
            return True
        pattern = normalize_event_name(pattern)
        if pattern.endswith("*"):
            if name.startswith(pattern[:-1]):
                return True
        elif pattern == name:
            return True
    return False


@lru_cache(maxsize=4096)
def compile_filter(expression: str) -> jmespath.parser.ParsedResult:
    return jmespath.compile(expression)


def _truthy(value: Any) -> bool:
    # JMESPath truthiness: 0 is true; empty strings, lists and objects, false and null are false.
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict) and not value:
        return False
    return True


def filter_view(message: Mapping[str, Any]) -> dict[str, Any]:
    """The message as filters see it: a Kafka `value` that holds strict JSON is parsed.

    So `value.action_type == 'login'` works on a JSON value, which otherwise stays a string (as
    in DataWorks). A base64 value, a value that is not strict JSON (NaN and Infinity included) or
    no value stays as is. The copy is one level deep, so filters never see a later change.
    """
    view = {name: dict(item) if isinstance(item, dict) else item for name, item in message.items()}
    value = view.get("value")
    if isinstance(value, str) and view.get("value_encoding") != "base64":
        try:
            view["value"] = json.loads(value, parse_constant=_reject_constant)
        except ValueError:
            pass
    return view


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def apply_filter(expression: str | None, message: dict[str, Any]) -> Match:
    """Evaluate a trigger's JMESPath filter; evaluation errors are reported, not raised."""
    if expression is None:
        return MATCHED
    try:
        result = compile_filter(expression).search(filter_view(message))
    except jmespath.exceptions.JMESPathError as exc:
        return Match(False, f"filter error: {exc}", error=True)
    except (TypeError, ValueError) as exc:
        # jmespath raises where the spec says "null": e.g. ordering a string against a number.
        return Match(False, f"filter {expression!r} is null for this message ({exc})")
    if _truthy(result):
        return MATCHED
    return Match(False, f"filter {expression!r} is false for this message")


def match_kafka(trigger: KafkaTriggerSpec, message: dict[str, Any]) -> Match:
    """Does a Kafka trigger message pass this trigger?"""
    if message.get("topic") != trigger.topic:
        return Match(False, f"topic {message.get('topic')!r} is not {trigger.topic!r}")
    if trigger.key is not None and message.get("key") != trigger.key:
        return Match(False, f"key {message.get('key')!r} is not {trigger.key!r}")
    return apply_filter(trigger.filter, message)


def match_s3(trigger: S3TriggerSpec, message: dict[str, Any]) -> Match:
    """Does an S3 CloudEvents trigger message pass this trigger?"""
    data = message.get("data") or {}
    s3 = data.get("s3") or {}
    bucket = (s3.get("bucket") or {}).get("name")
    key = (s3.get("object") or {}).get("key")
    name = data.get("eventName") or message.get("type") or ""
    if bucket != trigger.bucket:
        return Match(False, f"bucket {bucket!r} is not {trigger.bucket!r}")
    if not event_name_matches(trigger.events, name):
        return Match(False, f"event {name!r} is not one of {trigger.events}")
    if not isinstance(key, str) or not glob_match(trigger.key_pattern, key):
        return Match(False, f"key {key!r} does not match {trigger.key_pattern!r}")
    return apply_filter(trigger.filter, message)


def match_workflow(trigger: WorkflowTriggerSpec, message: dict[str, Any]) -> Match:
    """Does a finished upstream instance pass this trigger (workflow and final state)?"""
    if message.get("workflow") != trigger.workflow:
        return Match(False, f"workflow {message.get('workflow')!r} is not {trigger.workflow!r}")
    if message.get("state") not in trigger.states:
        return Match(False, f"state {message.get('state')!r} is not one of {trigger.states}")
    return apply_filter(trigger.filter, message)


def match(trigger: AnyTriggerSpec, message: dict[str, Any]) -> Match:
    if isinstance(trigger, KafkaTriggerSpec):
        return match_kafka(trigger, message)
    if isinstance(trigger, WorkflowTriggerSpec):
        return match_workflow(trigger, message)
    return match_s3(trigger, message)


_GLOB_SPECIALS = "*?["


def literal_prefix(pattern: str) -> str:
    """The part of a key glob before its first wildcard: every key it matches starts with it."""
    ends = [i for i in (pattern.find(c) for c in _GLOB_SPECIALS) if i != -1]
    return pattern[: min(ends)] if ends else pattern


T = TypeVar("T")


class TriggerIndex(Generic[T]):
    """Triggers found by what an event names, so matching costs per candidate, not per trigger.

    Kafka triggers are filed under (topic, key) (key None: any key); S3 triggers under (bucket,
    literal prefix of the key pattern). `candidates` returns every trigger that could match the
    message, and no trigger that cannot: one left out has a different topic, key, bucket or key
    prefix. Built once per trigger set; a lookup costs one dict probe per distinct prefix length
    in the bucket, whatever the number of triggers.
    """

    def __init__(self, triggers: list[tuple[KafkaTriggerSpec | S3TriggerSpec, T]]) -> None:
        self._kafka: dict[tuple[str, str | None], list[T]] = {}
        # bucket -> prefix length -> prefix -> triggers
        self._s3: dict[str, dict[int, dict[str, list[T]]]] = {}
        for spec, value in triggers:
            if isinstance(spec, KafkaTriggerSpec):
                self._kafka.setdefault((spec.topic, spec.key), []).append(value)
            else:
                prefix = literal_prefix(spec.key_pattern)
                by_length = self._s3.setdefault(spec.bucket, {})
                by_length.setdefault(len(prefix), {}).setdefault(prefix, []).append(value)
        self._lengths = {bucket: sorted(v) for bucket, v in self._s3.items()}

    def kafka(self, topic: str, key: str | None) -> list[T]:
        """Triggers on `topic` with no key or with exactly this key."""
        found = list(self._kafka.get((topic, None), ()))
        if key is not None:
            found.extend(self._kafka.get((topic, key), ()))
        return found

    def s3(self, bucket: str, key: str) -> list[T]:
        """Triggers on `bucket` whose key pattern's literal prefix starts `key`."""
        by_length = self._s3.get(bucket)
        if by_length is None:
            return []
        found: list[T] = []
        for length in self._lengths[bucket]:
            if length > len(key):
                break
            found.extend(by_length[length].get(key[:length], ()))
        return found

    def candidates(self, source: str, message: Mapping[str, Any]) -> list[T]:
        """The triggers that could match this Kafka or S3 CloudEvents message."""
        if source == "kafka":
            topic, key = message.get("topic"), message.get("key")
            if not isinstance(topic, str):
                return []
            return self.kafka(topic, key if isinstance(key, str) else None)
        s3 = (message.get("data") or {}).get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        key = (s3.get("object") or {}).get("key")
        if not isinstance(bucket, str) or not isinstance(key, str):
            return []
        return self.s3(bucket, key)
