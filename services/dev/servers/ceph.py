"""A throwaway Ceph cluster with a RADOS Gateway: real S3 with bucket notifications.

One monitor, one memstore OSD and one radosgw, started from the Debian packages (`ceph-mon
ceph-osd radosgw ceph-common`) as plain child processes in a temporary directory: no systemd, no
cephx (`auth * required = none`), pools of size 1. Takes about 15 s; everything lives in memory
and in the directory, which is removed on stop.

    with EmbeddedCeph() as ceph:                 # or `async with`
        ceph.endpoint, ceph.access_key, ceph.secret_key, ceph.region

RGW pushes bucket notifications through SNS-style topics: create a topic whose `push-endpoint`
attribute is the webhook URL (`create_topic(Name=..., Attributes={"push-endpoint": url})` on the
SNS API of the same endpoint), then `put_bucket_notification_configuration` with
`TopicConfigurations`; `notify_webhook` does both. RGW cannot send an Authorization header to an
HTTP endpoint, so put the webhook token into the URL (`...?token=...`). Its records say
`eventSource: "ceph:s3"`, carry event names without the `s3:` prefix and raw (not URL-encoded)
keys.

`missing_binaries()` says what is not installed; callers skip rather than fail when it is not
empty.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import IO, Any, Final, Self

from services.dev.servers.process import (
    ChildServer,
    die_with_parent,
    free_port,
    log_tail,
    stop_process,
)

BINARIES: Final = ("ceph-mon", "ceph-osd", "radosgw", "ceph", "radosgw-admin", "monmaptool")
PACKAGES: Final = "ceph-mon ceph-osd radosgw ceph-common"
REGION: Final = "default"
NOTIFY_EVENTS: Final = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")

_PROBE_INTERVAL_S = 0.2
_COMMAND_TIMEOUT_S = 30.0


class EmbeddedCephError(RuntimeError):
    """The Ceph cluster could not be started."""


def missing_binaries() -> list[str]:
    """Ceph programs this machine lacks (empty when the cluster can be started)."""
    return [name for name in BINARIES if shutil.which(name) is None]


def skip_reason() -> str | None:
    """Why the Ceph tests cannot run here, or None when they can."""
    missing = missing_binaries()
    if not missing:
        return None
    return (
        f"Ceph RADOS Gateway not installed (missing {', '.join(missing)}); "
        f"install it with: apt-get install -y {PACKAGES}"
    )


class EmbeddedCeph(ChildServer):
    """mon + memstore OSD + radosgw in a temporary directory, with one S3 user."""

    access_key: Final = "sluice-ceph-access"
    secret_key: Final = "sluice-ceph-secret"
    region: Final = REGION

    def __init__(
        self,
        *,
        root: Path | None = None,
        host: str = "127.0.0.1",
        rgw_port: int | None = None,
        start_timeout_s: float = 120.0,
        stop_timeout_s: float = 3.0,
    ) -> None:
        """Configure the cluster; `root` is its directory (default: a new temporary one,
        removed on stop)."""
        self._given_root = root
        self._host = host
        self._requested_rgw_port = rgw_port
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._root: Path | None = None
        self._processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._logs: list[IO[bytes]] = []
        self._rgw_port: int | None = None

    @property
    def endpoint(self) -> str:
        """`http://host:port` of the RADOS Gateway (S3 and SNS APIs)."""
        if self._rgw_port is None:
            raise RuntimeError("the Ceph cluster is not running")
        return f"http://{self._host}:{self._rgw_port}"

    @property
    def root(self) -> Path:
        if self._root is None:
            raise RuntimeError("the Ceph cluster is not running")
        return self._root

    def options(self) -> dict[str, Any]:
        """Keyword arguments for `session.create_client("s3" | "sns", **options)`."""
        return {
            "endpoint_url": self.endpoint,
            "region_name": self.region,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
        }

    def client(self, service: str) -> AbstractAsyncContextManager[Any]:
        """An aiobotocore client of the gateway (path-style addressing)."""
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(s3={"addressing_style": "path"})
        manager: AbstractAsyncContextManager[Any] = get_session().create_client(
            service, config=config, **self.options()
        )
        return manager

    def start(self) -> str:
        """Bootstrap and start the cluster; returns the gateway endpoint."""
        missing = missing_binaries()
        if missing:
            raise EmbeddedCephError(skip_reason())
        try:
            self._bootstrap()
        except BaseException:
            self.stop()
            raise
        return self.endpoint

    def stop(self) -> None:
        """Stop the daemons (gateway first) and remove a temporary directory."""
        for _, process in reversed(self._processes):
            stop_process(process, self._stop_timeout_s)
        self._processes.clear()
        for handle in self._logs:
            handle.close()
        self._logs.clear()
        self._rgw_port = None
        if self._root is not None and self._given_root is None:
            shutil.rmtree(self._root, ignore_errors=True)
        self._root = None

    async def __aenter__(self) -> Self:
        # Daemons are spawned by the calling thread (they die with it, see die_with_parent);
        # the waits in between block it for about 15 s, acceptable in fixtures and `sluice dev`.
        self.start()
        return self

    def _bootstrap(self) -> None:
        root = self._given_root or Path(tempfile.mkdtemp(prefix="sluice-ceph-"))
        root.mkdir(parents=True, exist_ok=True)
        self._root = root
        for sub in ("run", "log", "mon/a", "osd/0", "rgw"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self._start_timeout_s
        fsid = str(uuid.uuid4())
        mon_port = free_port(self._host)
        self._rgw_port = self._requested_rgw_port or free_port(self._host)
        conf = root / "ceph.conf"
        conf.write_text(self._config(fsid, mon_port))
        monmap = root / "monmap"
        self._run(
            "monmaptool",
            "--create",
            "--addv",
            "a",
            f"[v2:{self._host}:{mon_port}]",
            "--fsid",
            fsid,
            str(monmap),
        )
        self._run("ceph-mon", "-c", str(conf), "--mkfs", "-i", "a", "--monmap", str(monmap))
        self._spawn("mon", "ceph-mon", "-c", str(conf), "-i", "a", "-f")
        self._wait(deadline, "the monitor to form a quorum", lambda: self._ceph_ok("mon", "stat"))
        osd_uuid = str(uuid.uuid4())
        osd_id = self._run("ceph", "-c", str(conf), "osd", "new", osd_uuid).strip()
        self._run("ceph-osd", "-c", str(conf), "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
        self._spawn("osd", "ceph-osd", "-c", str(conf), "-i", osd_id, "-f")
        self._wait(deadline, "the OSD to come up", self._osd_up)
        self._spawn("rgw", "radosgw", "-c", str(conf), "-n", "client.rgw.a", "-f")
        self._wait(deadline, "the RADOS Gateway to answer HTTP", self._rgw_answers)
        self._run(
            "radosgw-admin",
            "-c",
            str(conf),
            "user",
            "create",
            "--uid",
            "sluice",
            "--display-name",
            "sluice",
            "--access-key",
            self.access_key,
            "--secret-key",
            self.secret_key,
        )

    def _config(self, fsid: str, mon_port: int) -> str:
        root = self.root
        return f"""[global]
fsid = {fsid}
mon host = v2:{self._host}:{mon_port}
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd objectstore = memstore
memstore device bytes = 1073741824
osd crush chooseleaf type = 0
run dir = {root}/run
admin socket = {root}/run/$name.asok
log file = {root}/log/$name.log
pid file = {root}/run/$name.pid
keyring = {root}/keyring

[mon.a]
mon data = {root}/mon/a

[osd.0]
osd data = {root}/osd/0

[client.rgw.a]
# radosgw defaults to cephx and a secure monitor connection; this cluster has no keys.
auth client required = none
ms mon client mode = crc
rgw data = {root}/rgw
rgw frontends = beast endpoint={self._host}:{self._rgw_port}
rgw dns name = {self._host}
"""

    def _run(self, *command: str) -> str:
        try:
            done = subprocess.run(
                command, capture_output=True, timeout=_COMMAND_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedCephError(f"{' '.join(command)} timed out") from exc
        if done.returncode != 0:
            raise EmbeddedCephError(
                f"{' '.join(command)} failed ({done.returncode}): "
                + (done.stderr or done.stdout).decode("utf-8", "replace")[-2000:]
            )
        return done.stdout.decode("utf-8", "replace")

    def _spawn(self, name: str, *command: str) -> None:
        log_file = (self.root / "log" / f"{name}.out").open("ab")
        self._logs.append(log_file)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        self._processes.append((name, process))

    def _wait(self, deadline: float, what: str, ready: Any) -> None:
        while True:
            for name, process in self._processes:
                if process.poll() is not None:
                    raise EmbeddedCephError(
                        f"ceph {name} exited with status {process.returncode} while waiting for "
                        f"{what}:\n" + self._daemon_log(name)
                    )
            if ready():
                return
            if time.monotonic() > deadline:
                logs = "\n".join(self._daemon_log(name) for name, _ in self._processes)
                raise EmbeddedCephError(
                    f"timed out after {self._start_timeout_s:g} s waiting for {what}:\n{logs}"
                )
            time.sleep(_PROBE_INTERVAL_S)

    def _daemon_log(self, name: str) -> str:
        files = {"mon": "mon.a.log", "osd": "osd.0.log", "rgw": "client.rgw.a.log"}
        return log_tail(self.root / "log" / files.get(name, f"{name}.out"))

    def _ceph_ok(self, *command: str) -> bool:
        done = subprocess.run(
            ["ceph", "-c", str(self.root / "ceph.conf"), "--connect-timeout", "2", *command],
            capture_output=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
        )
        return done.returncode == 0

    def _osd_up(self) -> bool:
        done = subprocess.run(
            ["ceph", "-c", str(self.root / "ceph.conf"), "--connect-timeout", "2", "osd", "stat"],
            capture_output=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
        )
        return done.returncode == 0 and b"1 up" in done.stdout

    def _rgw_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False


async def create_push_topic(sns: Any, name: str, push_endpoint: str) -> str:
    """Create (or update) an RGW topic pushing to `push_endpoint`; returns its ARN."""
    created = await sns.create_topic(Name=name, Attributes={"push-endpoint": push_endpoint})
    return str(created["TopicArn"])


async def notify_webhook(
    s3: Any,
    sns: Any,
    bucket: str,
    push_endpoint: str,
    *,
    events: Sequence[str] = NOTIFY_EVENTS,
    topic: str | None = None,
) -> str:
    """Make `bucket` push its notifications to `push_endpoint`; returns the topic ARN."""
    arn = await create_push_topic(sns, topic or f"sluice-{bucket}", push_endpoint)
    await s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "TopicConfigurations": [{"Id": "sluice", "TopicArn": arn, "Events": list(events)}]
        },
    )
    return arn
