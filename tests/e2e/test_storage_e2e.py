"""Upload → notification → instance → the node prints the key: the storage path end to end.

moto's S3 notifies its SQS queue; the storage listener and the executor run in this process.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.dev.servers.s3 import EmbeddedS3
from tests.factories import add_trigger, add_workflow, s3_trigger, shell_node, workflow
from tests.support.s3 import (
    NotifiedBucket,
    Pool,
    finished_instances,
    listener_settings,
    node_output,
    outcomes,
    running_executor,
    running_listener,
    wait_for_events,
)

# The spec-format example node: the key reaches the shell through parameter binding.
PRINT_PATH = (
    'FILE_PATH="${workflow.triggerMessage.data.s3.object.key}"\n'
    'echo "A new file has arrived: ${FILE_PATH}"'
)
# The same through the trigger-message file every node gets (no binding involved).
PRINT_PATH_FROM_FILE = (
    "FILE_PATH=$(python3 -c 'import json, os; "
    'print(json.load(open(os.environ["SLUICE_TRIGGER_MESSAGE_FILE"]))'
    '["data"]["s3"]["object"]["key"])\')\n'
    'echo "A new file has arrived: ${FILE_PATH}"'
)


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(PRINT_PATH_FROM_FILE, id="message-file"),
        pytest.param(PRINT_PATH, id="parameter-binding"),
    ],
)
async def test_an_uploaded_file_runs_the_workflow_that_prints_its_key(
    code: str,
    pool: Pool,
    db_url: str,
    embedded_s3: EmbeddedS3,
    notified_bucket: NotifiedBucket,
    s3_client: Any,
) -> None:
    bucket, queue = notified_bucket.bucket, notified_bucket.queue
    async with pool.acquire() as conn:
        await add_trigger(
            conn, s3_trigger("oss_new_file_trigger", bucket, key_pattern="input/*.csv")
        )
        await add_workflow(
            conn,
            workflow(
                "process_oss_file_workflow",
                trigger="oss_new_file_trigger",
                nodes=[shell_node("print_path", code=code)],
            ),
        )
    settings = listener_settings(db_url, embedded_s3, sqs_queue_urls=queue.url)

    async with running_listener(settings), running_executor(settings):
        await s3_client.put_object(Bucket=bucket, Key="input/a.csv", Body=b"id\n1\n")
        await s3_client.put_object(Bucket=bucket, Key="other/b.txt", Body=b"x")
        await s3_client.put_object(Bucket=bucket, Key="input/x/a.csv", Body=b"x")
        events = await wait_for_events(pool, 3)
        [instance] = await finished_instances(pool, 1)

    assert instance["state"] == "succeeded"
    output = await node_output(pool, instance["id"], "print_path")
    assert output == "A new file has arrived: input/a.csv\n"
    reasons = {e["ref"].split("@")[0]: await outcomes(pool, e["id"]) for e in events}
    assert reasons[f"{bucket}/other/b.txt"] == [
        ("filtered", "key 'other/b.txt' does not match 'input/*.csv'")
    ]
    assert reasons[f"{bucket}/input/x/a.csv"] == [
        ("filtered", "key 'input/x/a.csv' does not match 'input/*.csv'")
    ]
