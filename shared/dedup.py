"""Pure dedup keys: what makes two deliveries the same event for a trigger."""

from __future__ import annotations

from typing import Any

from shared.models.triggers import AnyTriggerSpec, KafkaTriggerSpec, WorkflowTriggerSpec


class DedupError(ValueError):
    """The dedup key cannot be computed from this message (e.g. a template path is missing)."""


def dedup_key(trigger: AnyTriggerSpec, message: dict[str, Any]) -> str | None:
    """The key admissions are unique on, or None when the trigger does not deduplicate."""
    if isinstance(trigger, WorkflowTriggerSpec):
        return workflow_dedup_key(trigger, message)
    if isinstance(trigger, KafkaTriggerSpec):
        if trigger.dedup == "offset":
            return f"{message['topic']}/{message['partition']}/{message['offset']}"
        from shared.params.paths import MissingPath, render_template

        try:
            rendered = render_template(trigger.dedup, {"workflow": {"triggerMessage": message}})
        except MissingPath as exc:
            raise DedupError(f"dedup template: {exc}") from None
        except ValueError as exc:
            raise DedupError(f"dedup template {trigger.dedup!r}: {exc}") from None
        return f"tpl:{rendered}"
    if trigger.dedup == "none":
        return None
    data = message.get("data") or {}
    s3 = data.get("s3") or {}
    bucket = (s3.get("bucket") or {}).get("name")
    obj = s3.get("object") or {}
    key = obj.get("key")
    if not bucket or not isinstance(key, str):
        raise DedupError("message has no data.s3.bucket.name / data.s3.object.key")
    if trigger.dedup == "key":
        return f"{bucket}/{key}"
    if trigger.dedup == "etag":
        etag = obj.get("eTag")
        if not etag:
            raise DedupError("dedup 'etag': message has no data.s3.object.eTag")
        return f"{bucket}/{key}@{etag}"
    marker = obj.get("versionId") or obj.get("sequencer")
    if not marker:
        raise DedupError("dedup 'version': message has neither versionId nor sequencer")
    return f"{bucket}/{key}#{marker}"


def workflow_dedup_key(trigger: WorkflowTriggerSpec, message: dict[str, Any]) -> str:
    """Once per upstream instance and final state; with `refire_on_rerun`, once per ending.

    A failed instance rerun to success fires a `succeeded` trigger either way (a new state);
    a rerun that succeeds *again* fires again only with `refire_on_rerun`.
    """
    instance_id = message.get("instance_id")
    if not isinstance(instance_id, int):
        raise DedupError("message has no upstream instance_id")
    if trigger.refire_on_rerun:
        return f"instance:{instance_id}#{message.get('generation')}"
    return f"instance:{instance_id}:{message.get('state')}"
