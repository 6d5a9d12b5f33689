"""`sluice upload FILE DEST`: put a local file into a bucket, e.g. to trigger a workflow.

Talks to the S3 endpoint of `SLUICE_S3_ENDPOINT` (or `--endpoint`), which under `sluice dev` is the
embedded S3 whose bucket notifications the storage listener reads:

    sluice upload ./a.csv s3://data/input/a.csv
    sluice upload ./a.csv data/input/        # key input/a.csv
    sluice upload ./a.csv data               # key a.csv

Credentials come from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` or botocore's usual chain. With
none configured and an endpoint on this machine, the embedded server's dev credentials are used,
so uploading to `sluice dev` needs no setup.
"""

from __future__ import annotations

import argparse
import ipaddress
import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from services.storage_listener import aws
from shared.client.commands import add_documented, run_local, say_error
from shared.settings import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY, S3Settings, load_settings


def parse_destination(destination: str, filename: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`, `bucket/key`, `bucket/prefix/` or `bucket`.

    A destination ending in `/` (or naming only a bucket) gets the file's name appended.
    """
    path = destination.removeprefix("s3://")
    bucket, _, key = path.partition("/")
    if not bucket:
        raise ValueError(f"destination {destination!r} names no bucket")
    if not key or key.endswith("/"):
        key += filename
    return bucket, key


def _is_local(endpoint: str | None) -> bool:
    if not endpoint:
        return False
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def upload_options(settings: S3Settings, endpoint: str | None) -> dict[str, Any]:
    """Client options for the upload: settings, the `--endpoint` override, dev credentials."""
    if endpoint:
        settings = settings.model_copy(update={"s3_endpoint": endpoint})
    options = aws.s3_options(settings)
    if not aws.credentials(settings) and _is_local(settings.s3_endpoint):
        options["aws_access_key_id"] = DEV_S3_ACCESS_KEY
        options["aws_secret_access_key"] = DEV_S3_SECRET_KEY
    return options


async def upload(
    options: dict[str, Any], body: bytes, bucket: str, key: str, content_type: str | None
) -> dict[str, Any]:
    """Upload `body` to `bucket/key`; returns what was stored (bucket, key, size, etag)."""
    extra: dict[str, Any] = {}
    guessed = content_type or mimetypes.guess_type(key)[0]
    if guessed:
        extra["ContentType"] = guessed
    async with aws.client("s3", options) as s3:
        response = await s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)
    return {
        "bucket": bucket,
        "key": key,
        "size": len(body),
        "etag": str(response.get("ETag", "")).strip('"'),
        "version_id": response.get("VersionId"),
    }


def _cmd_upload(args: argparse.Namespace) -> int:
    file: Path = args.file
    if not file.is_file():
        say_error(f"{file}: no such file")
        return 2
    try:
        bucket, key = parse_destination(args.destination, file.name)
    except ValueError as exc:
        say_error(str(exc))
        return 2
    options = upload_options(load_settings(), args.endpoint)
    return run_local(
        upload(options, file.read_bytes(), bucket, key, args.content_type),
        options.get("endpoint_url") or "AWS S3",
        args.json,
        lambda stored: (
            f"uploaded s3://{stored['bucket']}/{stored['key']} "
            f"({stored['size']} bytes, etag {stored['etag']})"
        ),
    )


def register(subparsers: Any) -> None:
    """Add `sluice upload` to the CLI."""
    parser = add_documented(
        subparsers,
        "upload",
        "upload a local file to a bucket (S3, MinIO, the sluice dev S3)",
        __doc__,
    )
    parser.add_argument("file", type=Path, help="local file to upload")
    parser.add_argument(
        "destination",
        help="s3://bucket/key, bucket/key, bucket/prefix/ or bucket (key = the file's name)",
    )
    parser.add_argument("--endpoint", help="S3 endpoint URL (default: SLUICE_S3_ENDPOINT)")
    parser.add_argument("--content-type", help="Content-Type (default: guessed from the name)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=_cmd_upload)
