"""The demo app from a notebook: start it in a subprocess (or connect to a running one)
and give it traffic in the background, without ever blocking the kernel.

>>> app = DemoApp.start_or_connect()          # doctest: +SKIP
>>> traffic = app.drive(seconds=60)           # doctest: +SKIP
>>> traffic.stop(); app.stop()                # doctest: +SKIP

``start_or_connect`` uses ``PERFNB_DEMO_URL`` when it is set (``make lab`` sets
it), otherwise starts ``perfnb demo-app`` on a free 127.0.0.1 port. A started app
exits when the kernel does (it watches the pipe on its standard input), so a
crashed notebook leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from types import TracebackType
from typing import Any

from perfnb.errors import ConfigError, PerfnbError
from perfnb.schema import Sink
from perfnb.widgets.lab import free_port

__all__ = ["DemoApp", "Traffic"]

ENV_URL = "PERFNB_DEMO_URL"


class Traffic:
    """Scripted demo traffic running on a background thread (see :meth:`DemoApp.drive`)."""

    def __init__(self, run: Callable[[], Any]) -> None:
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[Any] | None = None
        self._run = run
        self.result: Any = None
        self.error: BaseException | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="perfnb-traffic", daemon=True)
        self._thread.start()
        self._started.wait(timeout=5)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self._run())
        self._started.set()
        try:
            self.result = self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # kept for the notebook to show; the kernel carries on
            self.error = exc
        finally:
            # the traffic's own tasks (each guest's poll loop...) end with it
            leftovers = asyncio.all_tasks(self._loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                self._loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            self._loop.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the traffic to end; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Stop the traffic now (idempotent)."""
        task = self._task
        if task is not None and self._thread.is_alive():
            # the loop may close between the check and the call
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout=10)


class DemoApp:
    """A demo app to monitor: one this object started, or one already running."""

    def __init__(self, url: str, *, process: subprocess.Popen[bytes] | None = None) -> None:
        self.url = url.rstrip("/")
        self._process = process
        #: Where a started app writes its log (None for an app connected to).
        self.log_path: str | None = None

    @property
    def started_here(self) -> bool:
        return self._process is not None

    @classmethod
    def connect(cls, url: str, *, timeout: float = 10.0) -> DemoApp:
        """Use the app at ``url`` (checked to answer)."""
        if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
            raise ConfigError(f"url: got {url!r}; expected a loopback http:// address")
        app = cls(url)
        app._wait_ready(timeout)
        return app

    @classmethod
    def start(cls, *, port: int | None = None, timeout: float = 30.0) -> DemoApp:
        """Start ``perfnb demo-app`` on 127.0.0.1 (a free port by default)."""
        chosen = port or free_port()
        # the app's own log goes to a file: in a kernel, inherited output would land in cells
        log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the app
            prefix="perfnb-demo-", suffix=".log", delete=False
        )
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "perfnb.cli",
                "demo-app",
                "--port",
                str(chosen),
                "--exit-with-stdin",
            ],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        app = cls(f"http://127.0.0.1:{chosen}", process=process)
        app.log_path = log.name
        try:
            app._wait_ready(timeout)
        except BaseException:
            app.stop()
            raise
        return app

    @classmethod
    def start_or_connect(cls) -> DemoApp:
        """Connect to ``$PERFNB_DEMO_URL`` when set, else start one."""
        url = os.environ.get(ENV_URL)
        return cls.connect(url) if url else cls.start()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise PerfnbError(f"the demo app exited with code {self._process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/health", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers: that is all we wait for
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise PerfnbError(f"the demo app at {self.url} did not answer within {timeout:g} s")

    def drive(
        self,
        *,
        seconds: float = 600.0,
        speed: float = 10.0,
        guests: int = 4,
        sink: Sink | None = None,
        run_id: str | None = None,
    ) -> Traffic:
        """Scripted guests using the app (``seconds`` of simulated time, ``speed``× faster).

        ``sink`` gets the client's view of each request (``source="client"``).
        Returns at once; the traffic runs on its own thread.
        """
        from perfnb.demo.traffic import drive

        def run() -> Any:
            return drive(
                self.url, guests=guests, seconds=seconds, speed=speed, sink=sink, run_id=run_id
            )

        return Traffic(run)

    def stop(self) -> None:
        """Stop the app if this object started it (idempotent)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the app exits when its stdin closes
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> DemoApp:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        how = "started here" if self.started_here else "connected"
        return f"DemoApp({self.url!r}, {how})"
