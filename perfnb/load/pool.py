"""The controller's side of the worker processes: start them, tell them, hear them, end them.

Each worker runs :func:`~perfnb.load.worker.worker_main` in a ``spawn``-ed
process (or on a thread of this process, for a journey that cannot be pickled)
and talks to the controller over a pipe. Messages to a worker are
``("schedule", (start_monotonic_ns, length_s | None))`` (open model, once),
``("target", (users_or_rate, at_monotonic_ns))`` and ``("stop", reason)``;
from a worker ``("ready", index)``, ``("report", payload)`` (see
:meth:`~perfnb.load.stats.Stats.drain`) and ``("error", traceback)``.

:func:`stop_workers` is the end of every run: ``stop`` to all, then whoever has
not sent its final report within the grace period is killed.

>>> split_target(10, 3, "closed")
[4.0, 3.0, 3.0]
>>> split_target(90.0, 3, "open")
[30.0, 30.0, 30.0]
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait as wait_pipes
from typing import Any

from perfnb.errors import ConfigError
from perfnb.load.scenarios import Endpoints, Journey
from perfnb.load.worker import WorkerSpec, worker_main

__all__ = [
    "WorkerHandle",
    "cpu_shares",
    "first_failed",
    "receive",
    "send_targets",
    "spawn_workers",
    "split_target",
    "stop_workers",
    "worker_count",
]

#: What the controller does with a worker's report: merge it.
OnReport = Callable[["WorkerHandle", dict[str, Any]], None]


@dataclass(slots=True)
class WorkerHandle:
    """The controller's view of one worker: its pipe, its process and what it said."""

    index: int
    pipe: Pipe
    process: Any  # multiprocessing Process or threading.Thread
    in_process: bool = False
    ready: bool = False
    final: bool = False
    cpu_s: float = 0.0
    wall_s: float = 0.0
    rss_bytes: int = 0
    error: str = ""
    sent_target: float | None = None
    # the controller's thread and a stop from the caller's thread may both send
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: tuple[str, object]) -> None:
        """Send ``message``; a worker that is gone is noticed by the controller, not here."""
        with self.lock, contextlib.suppress(OSError, BrokenPipeError, ValueError):
            self.pipe.send(message)

    def alive(self) -> bool:
        """Whether the process (or thread) still runs."""
        return bool(self.process.is_alive())


def split_target(value: float, n: int, model: str) -> list[float]:
    """Each of ``n`` workers' share of ``value``: whole users (closed), equal rates (open)."""
    if model == "open":
        return [value / n] * n
    users = int(value)
    return [float(users // n + (1 if i < users % n else 0)) for i in range(n)]


def worker_count(workers: int | None, scenario: Endpoints | Journey) -> tuple[int, bool]:
    """How many workers to start, and whether they run on a thread of this process.

    ``None`` means one process per core, or one thread for a journey that cannot be
    pickled (defined in a notebook); ``0`` asks for the thread.

    >>> from perfnb.load.scenarios import Endpoint
    >>> worker_count(3, Endpoints([Endpoint("GET", "/")]))
    (3, False)
    >>> worker_count(0, Endpoints([Endpoint("GET", "/")]))
    (1, True)
    """
    if workers is None:
        workers = os.cpu_count() or 1
        if isinstance(scenario, Journey):
            try:
                pickle.dumps(scenario)
            except (pickle.PicklingError, AttributeError, TypeError):
                workers = 0
    if workers < 0:
        msg = f"workers={workers!r}: accepted: 0 (a thread in this process) or more processes"
        raise ConfigError(msg)
    if workers == 0:
        return 1, True
    return workers, False


def spawn_workers(specs: Sequence[WorkerSpec], *, in_process: bool) -> list[WorkerHandle]:
    """Start one worker per spec and return their handles (they say ``ready`` when set up)."""
    handles: list[WorkerHandle] = []
    ctx = multiprocessing.get_context("spawn")
    for spec in specs:
        name = f"perfnb-worker-{spec.index}"
        if in_process:
            parent, child = multiprocessing.Pipe()
            proc: Any = threading.Thread(
                target=worker_main, args=(spec, child), name=name, daemon=True
            )
        else:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(spec, child), name=name, daemon=True)
        proc.start()
        if not in_process:
            child.close()  # the child's end lives in the child: EOF here when it dies
        handles.append(WorkerHandle(spec.index, parent, proc, in_process=in_process))
    return handles


def receive(handles: Sequence[WorkerHandle], timeout: float, on_report: OnReport) -> None:
    """Read what the workers sent, waiting at most ``timeout`` seconds for the first message."""
    by_pipe = {h.pipe: h for h in handles if not h.final}
    if not by_pipe:
        return
    for pipe in wait_pipes(list(by_pipe), timeout=timeout):
        handle = by_pipe[pipe]  # type: ignore[index]
        try:
            kind, payload = handle.pipe.recv()
        except (EOFError, OSError):
            handle.final = True
            if not handle.error:
                handle.error = "worker ended without a final report"
            continue
        if kind == "ready":
            handle.ready = True
        elif kind == "error":
            handle.error = str(payload)
            handle.final = True
        elif kind == "report":
            on_report(handle, payload)


def send_targets(handles: Sequence[WorkerHandle], wanted: float, model: str, *, at_ns: int) -> None:
    """Give each worker its share of ``wanted`` (only when its share changed).

    ``at_ns`` (``time.monotonic_ns()`` of the controller's tick) is when the change
    applies: an open-model worker reschedules from then, not from when the
    message reaches it, so a slow pipe neither adds nor cuts requests.
    """
    for h, share in zip(handles, split_target(wanted, len(handles), model), strict=True):
        if share != h.sent_target:
            h.sent_target = share
            h.send(("target", (share, at_ns)))


def first_failed(handles: Sequence[WorkerHandle]) -> WorkerHandle | None:
    """A worker that failed, ended on its own or died, if any."""
    for h in handles:
        if h.error or h.final or not h.alive():
            return h
    return None


def stop_workers(
    handles: Sequence[WorkerHandle], reason: str, *, grace: float, on_report: OnReport
) -> int:
    """Tell every worker to stop, hear their final reports, kill the ones that do not obey.

    Returns how many were killed. A worker on a thread cannot be killed; it is
    left to end with the process (it is a daemon thread).
    """
    for h in handles:
        h.send(("stop", reason))
    deadline = time.monotonic() + grace
    while any(not h.final for h in handles) and time.monotonic() < deadline:
        receive(handles, 0.05, on_report)
    killed = 0
    for h in handles:
        if not h.final and not h.in_process and h.alive():
            h.process.kill()
            killed += 1
    for h in handles:
        if not h.in_process:
            h.process.join(timeout=1.0)
        with contextlib.suppress(OSError):
            h.pipe.close()
    return killed


def cpu_shares(handles: Sequence[WorkerHandle]) -> list[float]:
    """Each worker's CPU time over its wall time (1.0: one core busy all along)."""
    return [h.cpu_s / h.wall_s if h.wall_s > 0 else 0.0 for h in handles]
