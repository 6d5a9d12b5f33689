"""aiobotocore clients for S3 and SQS built from settings.

`SLUICE_S3_ENDPOINT` points S3 at MinIO, Ceph RGW or moto; without it the AWS endpoints apply.
SQS queues name their own endpoint: a queue URL outside AWS (moto, ElasticMQ, LocalStack) is
served by the host in that URL, so no separate endpoint setting exists. Credentials come from
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, else botocore's usual chain (profiles, IRSA,
instance roles).
"""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from shared.settings import S3Settings

_AWS_SQS_HOST = re.compile(r"^sqs[.-](?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
_AWS_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn")


def credentials(settings: S3Settings) -> dict[str, str]:
    """Explicit credentials when both are configured; empty to let botocore find them."""
    if settings.aws_access_key_id is None or settings.aws_secret_access_key is None:
        return {}
    return {
        "aws_access_key_id": settings.aws_access_key_id.get_secret_value(),
        "aws_secret_access_key": settings.aws_secret_access_key.get_secret_value(),
    }


def s3_options(settings: S3Settings) -> dict[str, Any]:
    """`create_client("s3", **options)` arguments: endpoint, region, credentials, path style."""
    options: dict[str, Any] = {"region_name": settings.s3_region, **credentials(settings)}
    if settings.s3_endpoint:
        options["endpoint_url"] = settings.s3_endpoint
        # Self-hosted stores rarely have wildcard DNS for virtual-hosted bucket names.
        options["config"] = AioConfig(s3={"addressing_style": "path"})
    return options


def sqs_options(settings: S3Settings, queue_url: str) -> dict[str, Any]:
    """`create_client("sqs", **options)` arguments for the endpoint serving `queue_url`."""
    parts = urlsplit(queue_url)
    host = parts.hostname or ""
    region = settings.s3_region
    matched = _AWS_SQS_HOST.match(host)
    if matched:
        region = matched.group("region")
    options: dict[str, Any] = {"region_name": region, **credentials(settings)}
    if not host.endswith(_AWS_SUFFIXES):
        options["endpoint_url"] = f"{parts.scheme}://{parts.netloc}"
    return options


def client(service: str, options: dict[str, Any]) -> AbstractAsyncContextManager[Any]:
    """An aiobotocore client context manager (`async with client("s3", opts) as s3:`)."""
    session = get_session()
    manager: AbstractAsyncContextManager[Any] = session.create_client(service, **options)
    return manager
