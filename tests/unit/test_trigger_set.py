"""Which triggers intake evaluates an event against, from the in-memory trigger set."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from shared.db.triggers import CandidateTrigger, subject_of
from shared.models.triggers import KafkaTriggerSpec, S3TriggerSpec
from shared.trigger_set import FULLY_AUDITED, TriggerSet
from tests.factories import kafka_event, kafka_trigger, s3_event, s3_trigger

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def stored(specs: list[tuple[int, KafkaTriggerSpec | S3TriggerSpec]]) -> TriggerSet:
    return TriggerSet(
        uuid4(),
        [
            CandidateTrigger(
                id=n,
                workspace_id=ws,
                name=spec.name,
                type=spec.type,
                subject=subject_of(spec, ws),
                enabled=spec.enabled,
                spec=spec,
                created_at=WHEN,
            )
            for n, (ws, spec) in enumerate(specs, start=1)
        ],
    )


def names(found: dict[int, list[CandidateTrigger]]) -> dict[int, list[str]]:
    return {ws: [t.name for t in ts] for ws, ts in found.items()}


def test_a_few_triggers_are_all_evaluated_by_name() -> None:
    triggers = stored([(1, s3_trigger("b", key_pattern="x/*")), (1, s3_trigger("a"))])
    assert names(triggers.to_evaluate(s3_event(key="input/a.csv"))) == {1: ["a", "b"]}


def test_many_triggers_give_only_the_index_candidates_per_workspace() -> None:
    many = [(1, s3_trigger(f"t{i:03}", key_pattern=f"p{i}/*")) for i in range(FULLY_AUDITED * 3)]
    other_ws = [(2, s3_trigger("mine", key_pattern="zzz/*"))]
    triggers = stored([*many, *other_ws, (1, s3_trigger("any", key_pattern="**"))])
    found = names(triggers.to_evaluate(s3_event(key="p7/a.csv")))
    # Workspace 2 has one trigger: evaluated, though it cannot match.
    assert found == {1: ["any", "t007"], 2: ["mine"]}
    assert triggers.watching(s3_event(), 1) == FULLY_AUDITED * 3 + 1


def test_kafka_triggers_of_another_cluster_are_never_candidates() -> None:
    keyed = [(1, kafka_trigger(f"k{i:03}", key=f"key{i}")) for i in range(FULLY_AUDITED * 2)]
    elsewhere = [(1, kafka_trigger("remote", key="key3", connection="other"))]
    triggers = stored([*keyed, *elsewhere])
    event = kafka_event(key="key3")
    assert names(triggers.to_evaluate(event)) == {1: ["k003"]}
    remote = event.model_copy(update={"cluster": "1/other"})
    assert names(triggers.to_evaluate(remote)) == {1: ["remote"]}


def test_an_invalid_event_names_the_workspaces_and_no_trigger() -> None:
    triggers = stored([(1, kafka_trigger()), (3, kafka_trigger())])
    bad = kafka_event().model_copy(update={"message": None, "error": "not UTF-8"})
    assert triggers.to_evaluate(bad) == {1: [], 3: []}
    assert triggers.to_evaluate(kafka_event(topic="unwatched")) == {}
