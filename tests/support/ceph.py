"""The session's Ceph RADOS Gateway; tests using it are marked `ceph` and skip, with
the reason, where the Ceph binaries are not installed.

    pytestmark = pytest.mark.ceph   # and ask for `ceph_rgw` (a plugin of tests/conftest.py)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.dev.servers.ceph import EmbeddedCeph, skip_reason


@pytest.fixture(scope="session", name="ceph_rgw")
def ceph_rgw_fixture() -> Iterator[EmbeddedCeph]:
    """A one-mon, one-OSD Ceph cluster with a gateway, started once (about 15 s)."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with EmbeddedCeph() as ceph:
        yield ceph
