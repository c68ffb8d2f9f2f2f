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
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
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
#: Where the workers' reader threads leave what they read: (handle, (kind, payload)).
Inbox = queue.SimpleQueue[tuple["WorkerHandle", tuple[str, Any]]]

#: A worker that said nothing for this long (it reports several times a second) has
#: failed, whatever its process looks like: the run must not go on blind.
SILENCE_LIMIT_S = 5.0


@dataclass(slots=True)
class WorkerHandle:
    """The controller's view of one worker: its pipe, its process and what it said.

    A thread of its own reads the worker's pipe (:meth:`read`) into the shared
    ``inbox``, so the controller's loop never blocks on a pipe: whatever a worker
    sends, or fails to send, its ticks, safety checks and stops go on.
    """

    index: int
    pipe: Pipe
    process: Any  # multiprocessing Process or threading.Thread
    inbox: Inbox
    in_process: bool = False
    ready: bool = False
    final: bool = False
    cpu_s: float = 0.0
    wall_s: float = 0.0
    rss_bytes: int = 0
    error: str = ""
    sent_target: float | None = None
    heard: float = field(default_factory=time.monotonic)  # when it last said something
    closed: bool = False
    # the controller's thread, a stop from the caller's thread and the reader all use
    # the pipe; closing it must not race a send onto a reused descriptor
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: tuple[str, object]) -> None:
        """Send ``message``; a worker that is gone is noticed by the controller, not here."""
        with self.lock:
            if self.closed:
                return
            with contextlib.suppress(OSError, ValueError):
                self.pipe.send(message)

    def alive(self) -> bool:
        """Whether the process (or thread) still runs."""
        return bool(self.process.is_alive())

    def read(self) -> None:
        """Read messages into the inbox until the worker's end closes (the reader thread)."""
        started = False  # whether the worker said it was ready (seen on this thread)
        try:
            while True:
                try:
                    message = self.pipe.recv()
                except EOFError:
                    text = "worker ended without a final report"
                    if not started:
                        text = (
                            "worker process ended while starting (its error is printed above; "
                            'a script that starts a run needs `if __name__ == "__main__":`)'
                        )
                    self.inbox.put((self, ("gone", text)))
                    return
                except OSError as exc:
                    self.inbox.put((self, ("gone", f"the worker's pipe failed: {exc}")))
                    return
                except Exception as exc:  # a torn or garbled message: the stream is lost
                    text = f"unreadable message from the worker ({type(exc).__name__}: {exc})"
                    self.inbox.put((self, ("error", text[:500])))
                    return
                started = started or message[0] == "ready"
                self.inbox.put((self, message))
        finally:
            with self.lock:
                self.closed = True
                with contextlib.suppress(OSError):
                    self.pipe.close()


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
    given: object = workers  # typed int, but notebook input may be anything
    if isinstance(given, bool) or not isinstance(given, int) or workers < 0:
        msg = f"workers={workers!r}: accepted: 0 (a thread in this process) or more processes"
        raise ConfigError(msg)
    if workers == 0:
        return 1, True
    return workers, False


def spawn_workers(specs: Sequence[WorkerSpec], *, in_process: bool) -> list[WorkerHandle]:
    """Start one worker per spec and return their handles (they say ``ready`` when set up)."""
    handles: list[WorkerHandle] = []
    inbox: Inbox = queue.SimpleQueue()
    ctx = multiprocessing.get_context("spawn")
    for spec in specs:
        name = f"perfnb-worker-{spec.index}"
        if in_process:
            parent, child = multiprocessing.Pipe()
            proc: Any = threading.Thread(
                target=worker_main, args=(spec, child), name=name, daemon=True
            )
            proc.start()
        else:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(spec, child), name=name, daemon=True)
            # Ctrl-C in a terminal goes to the whole process group: a worker started with
            # SIGINT blocked never sees it before it sets it aside (see worker_main), and
            # the controller alone stops the run and reports it
            with _sigint_blocked():
                proc.start()
            child.close()  # the child's end lives in the child: EOF here when it dies
        handle = WorkerHandle(spec.index, parent, proc, inbox, in_process=in_process)
        threading.Thread(target=handle.read, name=f"{name}-reader", daemon=True).start()
        handles.append(handle)
    return handles


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    # the signal mask is per thread and inherited by a child process
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    except (AttributeError, OSError):  # pragma: no cover - platforms without sigmask
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def receive(handles: Sequence[WorkerHandle], timeout: float, on_report: OnReport) -> None:
    """Handle what the workers sent, waiting at most ``timeout`` seconds for the first message.

    Never blocks longer than ``timeout``: the pipes are read by the handles' own threads.
    """
    if not handles:
        return
    inbox = handles[0].inbox
    try:
        item = inbox.get(timeout=max(0.0, timeout)) if timeout > 0 else inbox.get_nowait()
    except queue.Empty:
        return
    while True:
        _handle(*item, on_report)
        try:
            item = inbox.get_nowait()
        except queue.Empty:
            return


def _handle(handle: WorkerHandle, message: tuple[str, Any], on_report: OnReport) -> None:
    handle.heard = time.monotonic()
    kind, payload = message
    if handle.final and kind != "report":
        return
    if kind == "ready":
        handle.ready = True
    elif kind in ("error", "gone"):
        if not handle.error:
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
    """A worker that failed, ended on its own, died or fell silent, if any."""
    now = time.monotonic()
    for h in handles:
        if h.ready and not h.final and now - h.heard > SILENCE_LIMIT_S:
            h.error = h.error or f"the worker sent nothing for {now - h.heard:.1f} s"
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
    # the pipes are closed by their reader threads once the workers' ends are gone
    return killed


def cpu_shares(handles: Sequence[WorkerHandle]) -> list[float]:
    """Each worker's CPU time over its wall time (1.0: one core busy all along)."""
    return [h.cpu_s / h.wall_s if h.wall_s > 0 else 0.0 for h in handles]
