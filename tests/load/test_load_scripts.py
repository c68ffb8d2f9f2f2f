"""Load runs started from a script in a terminal: Ctrl-C and the ``__main__`` guard.

A terminal's Ctrl-C sends SIGINT to the whole process group, the worker processes
included; only the controller answers it, so the user sees the run's result and
not one traceback per worker. A script that starts its run at import (no
``if __name__ == "__main__":``) is told so in one clear message.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from load_target import TargetApp, wait_for

pytestmark = pytest.mark.slow


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "run_it.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_ctrl_c_in_a_terminal_stops_the_run_without_worker_tracebacks(
    target: TargetApp, tmp_path: Path
) -> None:
    script = _script(
        tmp_path,
        f"""
        from perfnb.load import Endpoint, Endpoints, Users, run_load

        if __name__ == "__main__":
            result = run_load(
                {target.url!r}, Endpoints([Endpoint("GET", "/x")]), Users(4, duration=60),
                workers=2,
            )
            print("STOP", result.stop.reason, result.total.count, flush=True)
        """,
    )
    # a session of its own, like a terminal's foreground job, with SIGINT handled as
    # a terminal's shell leaves it
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for(lambda: len(target.log) > 50, timeout=60, what="load to reach the target")
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    text = err.decode()
    assert process.returncode == 0, text
    assert "STOP interrupt" in out.decode()
    assert "Traceback" not in text
    assert "KeyboardInterrupt" not in text
    seen = len(target.log)
    time.sleep(0.5)
    assert len(target.log) == seen  # nothing left sending


def test_a_script_without_the_main_guard_is_told_what_to_do(
    target: TargetApp, tmp_path: Path
) -> None:
    script = _script(
        tmp_path,
        f"""
        from perfnb.load import Endpoint, Endpoints, Users, run_load

        result = run_load(
            {target.url!r}, Endpoints([Endpoint("GET", "/x")]), Users(2, duration=2), workers=1
        )
        print("STOP", result.stop.reason, flush=True)
        """,
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert "STOP worker_failed" in done.stdout
    assert 'if __name__ == "__main__":' in done.stderr
    assert target.log == []  # the run never sent a request
