"""nginx on 127.0.0.1 as a load target perfnb did not write, with its own request log.

nginx answers a static file far faster than any Python server, which is what
stresses the load engine's own machinery (its pipes, its timers), and it logs
every request with its start time, status and the ``X-Perfnb-Run`` header, so a
test judges when traffic really stopped by the server's own account.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

_CONF = """\
{user}daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    log_format timed '$msec $request_time $status $http_x_perfnb_run $request_uri';
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
        access_log {root}/access.log timed buffer=64k flush=100ms;
        location = /fail {{ return 500 "failing\\n"; }}
        location = /bounce {{ return 302 /index.html; }}
    }}
}}
"""


@dataclass
class Nginx:
    """A running nginx: its URL and its log of requests."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, run_id: str | None = None) -> list[tuple[float, int, str]]:
        """(start epoch s, status, path) of every request logged, of one run if given.

        nginx writes its buffered log within 100 ms; a request aborted by the client
        is logged with status 499 when nginx notices.
        """
        time.sleep(0.3)
        out = []
        log = self.root / "access.log"
        if not log.exists():
            return out
        for line in log.read_text().splitlines():
            parts = line.split(" ")
            if len(parts) < 5:
                continue
            msec, took, status, run, path = parts[:5]
            if run_id is not None and run != run_id:
                continue
            out.append((float(msec) - float(took), int(status), path))
        return out

    def stop(self) -> None:
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_nginx(root: Path) -> Nginx:
    """Start nginx serving ``/index.html`` (1 kB) from ``root`` on a free loopback port."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.fail("nginx is not installed: `make test` installs Debian's nginx")
    (root / "www").mkdir(parents=True)
    (root / "tmp").mkdir()
    (root / "www" / "index.html").write_bytes(b"x" * 1024)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = root / "nginx.conf"
    # run as root (a CI box), nginx's workers would drop to "nobody" and could not read
    # the test's private temp folder
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(_CONF.format(root=root, port=port, user=user))
    process = subprocess.Popen(
        [binary, "-c", str(conf), "-p", str(root), "-e", str(root / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            pytest.fail(f"nginx did not start: {err}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return Nginx(root, port, process)
        except OSError:
            time.sleep(0.05)
    process.kill()
    pytest.fail("nginx did not listen within 10 s")
