"""Run the demo app in a child process on 127.0.0.1, and stop it for sure.

The child is ``python -m perfnb.demo`` on a free port. It exits when its stdin
closes, so it never outlives the process that started it, even one killed
outright; :meth:`DemoAppProcess.stop` closes stdin, then escalates to SIGTERM
and SIGKILL if it must.

>>> with DemoAppProcess() as app:                       # doctest: +SKIP
...     httpx.get(app.url + "/api/health").json()["status"]
'ok'
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from perfnb.errors import PerfnbError

__all__ = ["DemoAppProcess"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DemoAppProcess:
    """The demo app in a subprocess: ``start()`` waits until it answers, ``stop()`` ends it.

    ``db``: the SQLite file (default: a throwaway one); ``log``: where the child's
    output goes (default: a temporary file, shown in the error if it fails to
    start); ``args``: more ``perfnb demo-app`` options; ``env``: extra environment.
    """

    def __init__(
        self,
        *,
        db: str | os.PathLike[str] | None = None,
        log: str | os.PathLike[str] | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.db = None if db is None else Path(db)
        self.args = list(args)
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self._log_path = None if log is None else Path(log)
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        """The child's process id."""
        if self.process is None:
            raise PerfnbError("the demo app is not running: call start() first")
        return self.process.pid

    def start(self) -> DemoAppProcess:
        """Start the child and wait until ``/api/health`` answers; retries a taken port."""
        if self._log_path is None:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives until stop()
        else:
            self._log = self._log_path.open("wb")
        for _attempt in range(3):
            port = _free_port()
            argv = [sys.executable, "-m", "perfnb.demo", "--port", str(port), "--exit-with-stdin"]
            if self.db is not None:
                argv += ["--db", str(self.db)]
            self.process = subprocess.Popen(
                [*argv, *self.args],
                stdin=subprocess.PIPE,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )
            self.url = f"http://127.0.0.1:{port}"
            if self._wait_until_up():
                return self
            self._reap()
        output = self._output()
        self.stop()
        raise PerfnbError(f"the demo app did not start; its output:\n{output}")

    def _wait_until_up(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False  # exited: most likely the port was taken meanwhile
                try:
                    if client.get(self.url + "/api/health").status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        return False

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        if self._log_path is not None:
            return self._log_path.read_text(errors="replace")[-4000:]
        self._log.seek(0)
        return self._log.read()[-4000:].decode(errors="replace")

    def _reap(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # the polite way: the app shuts down cleanly
        for signal_it, wait in ((None, 10.0), (process.terminate, 5.0), (process.kill, 5.0)):
            if signal_it is not None:
                signal_it()
            try:
                process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        """Stop the child (stdin closed, then SIGTERM, then SIGKILL). Idempotent."""
        self._reap()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> DemoAppProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
