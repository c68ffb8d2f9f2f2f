"""Start JupyterLab on 127.0.0.1 with perfnb's notebooks, and ``perfnb lab``.

:class:`LabServer` is what ``make lab`` and the browser tests use: a JupyterLab
subprocess on a free loopback port, with a random token, optionally *isolated*
(its own config, data, runtime and IPython directories) so that nothing on the
machine leaks into a test and nothing a test does leaks out.

>>> import tempfile
>>> with LabServer(root=tempfile.mkdtemp(), isolated=True) as lab:  # doctest: +SKIP
...     print(lab.url("01_live_dashboard.ipynb"))
http://127.0.0.1:...
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from perfnb._paths import notebooks_dir
from perfnb.errors import ConfigError, PerfnbError

__all__ = ["NOTEBOOKS_DIR", "LabServer", "free_port", "main_lab"]

#: The notebooks shipped with perfnb.
NOTEBOOKS_DIR: Final = notebooks_dir()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LabServer:
    """A JupyterLab server in a subprocess, stopped when the ``with`` block ends.

    ``isolated`` gives the server fresh Jupyter config/data/runtime directories
    (the packages' own lab extensions and kernels are still found through the
    environment's prefix); ``expose_app`` sets ``window.jupyterapp`` so a browser
    driver can run commands. ``env`` adds variables for the server and its kernels.
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike[str],
        port: int | None = None,
        token: str | None = None,
        isolated: bool = False,
        expose_app: bool = False,
        env: dict[str, str] | None = None,
        startup_timeout: float = 60.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"root: {str(self.root)!r} is not a directory")
        self.port = port or free_port()
        self.token = token or secrets.token_hex(16)
        self._isolated = isolated
        self._expose_app = expose_app
        self._extra_env = dict(env or {})
        self._startup_timeout = startup_timeout
        self._log_path = Path(log_path) if log_path else None
        self._home: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, notebook: str | None = None) -> str:
        """The address of the lab (or of ``notebook`` in it), token included."""
        path = f"/lab/tree/{notebook}" if notebook else "/lab"
        return f"{self.base_url}{path}?token={self.token}"

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self._isolated:
            self._home = tempfile.TemporaryDirectory(prefix="perfnb-lab-")
            home = Path(self._home.name)
            for name, sub in (
                ("JUPYTER_CONFIG_DIR", "config"),
                ("JUPYTER_DATA_DIR", "data"),
                ("JUPYTER_RUNTIME_DIR", "runtime"),
                ("IPYTHONDIR", "ipython"),
                ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
            ):
                (home / sub).mkdir()
                env[name] = str(home / sub)
            _write_isolated_settings(home / "settings")
            # user-site packages and extra Jupyter paths from the machine stay out
            env["PYTHONNOUSERSITE"] = "1"
            env.pop("JUPYTER_PATH", None)
            env.pop("JUPYTER_CONFIG_PATH", None)
        env.update(self._extra_env)
        return env

    def start(self) -> LabServer:
        """Start the server and wait until its REST API answers."""
        args = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            # no calls home from a test or an offline machine
            "--LabApp.news_url=",
            "--LabApp.extension_manager=readonly",
            "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--allow-root")  # containers and CI run as root
        if self._expose_app:
            args.append("--LabApp.expose_app_in_browser=True")
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115 - the server outlives this call
        try:
            self._proc = subprocess.Popen(
                args, env=self._environment(), stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            if self._log_path:
                log.close()  # type: ignore[union-attr]
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        status = f"{self.base_url}/api/status?token={self.token}"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise PerfnbError(f"JupyterLab exited with code {self._proc.returncode}")
            try:
                with urllib.request.urlopen(status, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise PerfnbError(f"JupyterLab did not answer on port {self.port} in time")

    def stop(self) -> None:
        """Stop the server (and its kernels); idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # jupyter_server shuts its kernels down on SIGTERM
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._home is not None:
            self._home.cleanup()
            self._home = None

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _write_isolated_settings(settings: Path) -> None:
    # a fresh lab asks about news and kernels in dialogs that would hide the
    # notebook from a browser driver; answer them up front
    answers = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
            "autoStartDefaultKernel": True,
        },
    }
    for name, value in answers.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


def copy_notebooks(dest: str | os.PathLike[str], *, source: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Copy the shipped notebooks into ``dest``; returns the copies."""
    out = []
    for nb in sorted(source.glob("*.ipynb")):
        target = Path(dest) / nb.name
        shutil.copyfile(nb, target)
        out.append(target)
    return out


def main_lab(argv: Sequence[str]) -> int:
    """``perfnb lab``: start the demo app and JupyterLab on perfnb's notebooks.

    The notebooks find the running demo app through ``PERFNB_DEMO_URL``; stop
    both with Ctrl-C.
    """
    parser = argparse.ArgumentParser(prog="perfnb lab", description=main_lab.__doc__)
    parser.add_argument("--port", type=int, default=8888, help="JupyterLab port (default 8888)")
    parser.add_argument("--demo-port", type=int, default=0, help="demo app port (default: free)")
    parser.add_argument(
        "--notebooks", default=str(NOTEBOOKS_DIR), help="folder to open (default: notebooks/)"
    )
    parser.add_argument("--no-demo", action="store_true", help="do not start the demo app")
    args = parser.parse_args(list(argv))
    root = Path(args.notebooks)
    if not root.is_dir():
        print(f"perfnb lab: --notebooks {str(root)!r} is not a directory", file=sys.stderr)
        return 2
    env: dict[str, str] = {}
    demo: subprocess.Popen[bytes] | None = None
    if not args.no_demo:
        demo_port = args.demo_port or free_port()
        demo = subprocess.Popen(
            [sys.executable, "-m", "perfnb.cli", "demo-app", "--port", str(demo_port)]
        )
        env["PERFNB_DEMO_URL"] = f"http://127.0.0.1:{demo_port}"
        print(f"demo app: http://127.0.0.1:{demo_port}", flush=True)
    try:
        with LabServer(root=root, port=args.port, env=env) as lab:
            print(f"JupyterLab: {lab.url()}", flush=True)
            assert lab._proc is not None
            lab._proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if demo is not None:
            demo.terminate()
            demo.wait(timeout=15)
    return 0
