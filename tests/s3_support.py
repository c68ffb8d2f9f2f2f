"""A real S3 endpoint for tests: moto's server on a free 127.0.0.1 port.

:func:`moto_s3` starts ``python -m moto.server``, points the usual AWS environment
variables at it (and away from this machine's own profiles), creates one bucket,
and yields its :class:`Endpoint`; processes started inside inherit the settings.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest

BUCKET = "perfnb-tests"


@dataclass(frozen=True)
class Endpoint:
    url: str
    fs: pafs.S3FileSystem

    def keys(self, prefix: str) -> dict[str, int]:
        """Every object under ``prefix`` of the bucket, directory markers included."""
        selector = pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True)
        return {
            i.path[len(BUCKET) + 1 :]: int(i.size or 0)
            for i in self.fs.get_file_info(selector)
            if i.type == pafs.FileType.File
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def moto_s3(folder: Path) -> Iterator[Endpoint]:
    """moto's S3 server with one bucket, and the AWS settings that reach it."""
    port = _free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log = (folder / "moto.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    home = folder / "aws"
    home.mkdir(exist_ok=True)
    settings = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
        # Nothing from this machine's own profiles or an instance's metadata service.
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in settings.items():
            patch.setenv(name, value)
        patch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        patch.delenv("AWS_PROFILE", raising=False)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("moto's server did not start") from None
                    time.sleep(0.1)
            fs = pafs.S3FileSystem(
                endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True
            )
            fs.create_dir(BUCKET)
            yield Endpoint(url, fs)
        finally:
            server.terminate()
            server.wait(timeout=10)
            log.close()
