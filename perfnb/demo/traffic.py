"""Scripted traffic for the demo app: a few guests doing what people do, sped up.

Each guest signs in, polls like the front end (2 s, 5 s when idle, following the
polling-runaway flag when it is on), edits cards, chats, heartbeats presence, and
now and then imports or exports cards in bulk. Simulated time runs ``speed``
times faster than the clock, so three minutes of a small team's work take
eighteen seconds at ``speed=10``.

This is the demo's stand-in for a load preset; it uses httpx (fine at this rate)
and, given a ``sink``, perfnb's httpx instrumentation so the client's view of
every request is recorded too, under the app's route templates and service.

>>> import asyncio
>>> result = asyncio.run(drive("http://127.0.0.1:8000", seconds=30))  # doctest: +SKIP
>>> result.requests > 0                                                # doctest: +SKIP
True
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from perfnb.collect.httpx import default_route, instrument
from perfnb.demo.templates import SERVICE, route_template
from perfnb.schema import Sink

__all__ = ["TrafficResult", "drive"]

POLL_S: Final = 2.0
IDLE_POLL_S: Final = 5.0
IDLE_AFTER: Final = 5
PRESENCE_EVERY_S: Final = 15.0
#: Think time between a guest's actions, mean (simulated seconds).
THINK_S: Final = 6.0
#: Most poll loops one guest runs while the runaway fault is on.
MAX_LOOPS: Final = 8

_WORDS: Final = [
    "release",
    "plan",
    "review",
    "sprint",
    "bug",
    "fix",
    "design",
    "api",
    "latency",
    "cache",
    "deploy",
    "rollback",
    "metrics",
    "alert",
    "chart",
    "notebook",
    "draft",
    "budget",
    "idea",
    "customer",
    "feedback",
]


@dataclass
class TrafficResult:
    """What the scripted client did: requests sent, answers by status class, failures."""

    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def errors(self) -> int:
        """5xx answers plus requests that got no answer at all."""
        return self.statuses["5xx"] + sum(self.failures.values())


def _route(path: str) -> str:
    # Record the client's view under the app's own templates, so both views meet.
    return route_template(path) or default_route(path)


class _Guest:
    """One simulated person with their own session."""

    def __init__(
        self,
        index: int,
        client: httpx.AsyncClient,
        rng: random.Random,
        result: TrafficResult,
        *,
        speed: float,
        deadline: float,
    ) -> None:
        self.index = index
        self.client = client
        self.rng = rng
        self.result = result
        self.speed = speed
        self.deadline = deadline
        self.cursor: int | None = None
        self.loops = 0
        self.runaway = False
        self.cards: list[int] = []
        self.conversations: list[int] = []
        self.tasks: set[asyncio.Task[None]] = set()

    # -- plumbing -------------------------------------------------------------

    async def call(self, method: str, url: str, **kw: Any) -> httpx.Response | None:
        """Send one request; count it; never raise for the network or the status."""
        try:
            response = await self.client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            self.result.requests += 1
            self.result.failures[type(exc).__name__] += 1
            return None
        # Counted once answered: a poll cancelled at the end of the run is no request.
        self.result.requests += 1
        self.result.statuses[f"{response.status_code // 100}xx"] += 1
        return response

    async def sleep(self, simulated: float) -> bool:
        """Sleep simulated seconds; False once the run is over."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(simulated / self.speed, left))
        return time.monotonic() < self.deadline

    def words(self, n: int) -> str:
        return " ".join(self.rng.choice(_WORDS) for _ in range(n))

    def spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- the journey ----------------------------------------------------------

    async def run(self) -> None:
        """Sign in, poll in the background, act until the deadline, sign out."""
        r = await self.call("POST", "/api/guests", json={"name": f"guest-{self.index}"})
        if r is None or r.status_code != 201:
            return
        me = r.json()
        if self.index == 0 or self.rng.random() < 0.5:  # some come back and sign in again
            await self.call("POST", "/api/logout")
            await self.call(
                "POST", "/api/login", json={"user_id": me["user"]["id"], "code": me["code"]}
            )
        await self.load()
        self.spawn(self.poll_loop(first=True))
        self.spawn(self.presence_loop())
        if self.index == 0:
            await self.tour()
        while await self.sleep(self.rng.expovariate(1.0 / THINK_S)):
            await self.act()
        if self.index == 0:
            await self.call("GET", "/api/cards/export", params={"format": "json"})
            await self.delete_card()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.call("POST", "/api/logout")

    async def load(self) -> None:
        r = await self.call("GET", "/api/poll")
        if r is not None and r.status_code == 200:
            self.cursor = r.json()["cursor"]
        r = await self.call("GET", "/api/cards", params={"limit": 50})
        if r is not None and r.status_code == 200:
            self.cards = [c["id"] for c in r.json()["cards"]]
        r = await self.call("GET", "/api/conversations")
        if r is not None and r.status_code == 200:
            self.conversations = [c["id"] for c in r.json()["conversations"]]

    async def tour(self) -> None:
        """A newcomer tries everything once, so every route shows up in a short run."""
        await self.bulk_import()
        await self.create_card()
        await self.view_card()
        await self.edit_card()
        await self.start_conversation()
        await self.chat()
        await self.read_messages()

    async def act(self) -> None:
        actions: list[tuple[float, Callable[[], Coroutine[Any, Any, None]]]] = [
            (25, self.create_card),
            (25, self.edit_card),
            (10, self.view_card),
            (4, self.delete_card),
            (20, self.chat),
            (5, self.start_conversation),
            (8, self.read_messages),
            (2, self.bulk_import),
            (1, self.export),
        ]
        weights = [w for w, _ in actions]
        await self.rng.choices([a for _, a in actions], weights)[0]()

    async def create_card(self) -> None:
        body = {"title": self.words(3).capitalize(), "body": self.words(12)}
        r = await self.call("POST", "/api/cards", json=body)
        if r is not None and r.status_code == 201:
            self.cards.append(r.json()["id"])

    async def view_card(self) -> None:
        if self.cards:
            await self.call("GET", f"/api/cards/{self.rng.choice(self.cards)}")

    async def edit_card(self) -> None:
        if not self.cards:
            await self.create_card()
            return
        card_id = self.rng.choice(self.cards)
        r = await self.call("GET", f"/api/cards/{card_id}")
        if r is None or r.status_code != 200:
            if r is not None and r.status_code == 404:
                self.cards.remove(card_id)
            return
        card = r.json()
        await self.sleep(2.0)  # reading before typing: others may edit meanwhile (409)
        change = {"body": card["body"] + " " + self.words(3), "version": card["version"]}
        await self.call("PUT", f"/api/cards/{card_id}", json=change)

    async def delete_card(self) -> None:
        if self.cards:
            card_id = self.cards.pop(self.rng.randrange(len(self.cards)))
            await self.call("DELETE", f"/api/cards/{card_id}")

    async def bulk_import(self) -> None:
        count = self.rng.randint(20, 60)
        cards = [
            {"title": f"Imported {self.words(2)}", "body": self.words(30)} for _ in range(count)
        ]
        r = await self.call("POST", "/api/cards/bulk", json={"cards": cards})
        if r is not None and r.status_code == 201:
            self.cards.extend(r.json()["ids"][:10])

    async def export(self) -> None:
        fmt = self.rng.choice(["json", "csv"])
        await self.call("GET", "/api/cards/export", params={"format": fmt})

    async def start_conversation(self) -> None:
        r = await self.call("POST", "/api/conversations", json={"title": self.words(2)})
        if r is not None and r.status_code == 201:
            self.conversations.append(r.json()["id"])

    async def chat(self) -> None:
        if not self.conversations:
            await self.start_conversation()
        if self.conversations:
            conv = self.rng.choice(self.conversations)
            await self.call(
                "POST", f"/api/conversations/{conv}/messages", json={"body": self.words(8)}
            )

    async def read_messages(self) -> None:
        if self.conversations:
            conv = self.rng.choice(self.conversations)
            await self.call("GET", f"/api/conversations/{conv}/messages", params={"limit": 50})

    async def presence_loop(self) -> None:
        while True:
            status = self.rng.choice(["active", "active", "active", "idle"])
            where = self.rng.choice(["cards", "chat"])
            await self.call("POST", "/api/presence", json={"status": status, "location": where})
            await self.call("GET", "/api/presence")
            if not await self.sleep(PRESENCE_EVERY_S):
                return

    async def poll_loop(self, *, first: bool) -> None:
        """Poll as the front end does; the first loop lives all run, extras only in a runaway."""
        self.loops += 1
        empty = 0
        try:
            while await self.sleep(POLL_S if self.runaway or empty < IDLE_AFTER else IDLE_POLL_S):
                params = {} if self.cursor is None else {"since": self.cursor}
                r = await self.call("GET", "/api/poll", params=params)
                if r is None or r.status_code != 200:
                    continue
                data = r.json()
                self.cursor = max(self.cursor or 0, data["cursor"])
                empty = 0 if data["changes"] else empty + 1
                self.runaway = bool(data["runaway"])
                if self.runaway and self.loops < MAX_LOOPS:
                    self.spawn(self.poll_loop(first=False))  # the bug: one more loop per answer
                if not self.runaway and not first:
                    return
        finally:
            self.loops -= 1


async def drive(
    base_url: str,
    *,
    guests: int = 6,
    seconds: float = 180.0,
    speed: float = 10.0,
    run_id: str | None = None,
    sink: Sink | None = None,
    seed: int | None = None,
    timeout: float = 10.0,
) -> TrafficResult:
    """Drive ``seconds`` of simulated use by ``guests`` people, ``speed`` times faster.

    ``run_id`` tags every request (``X-Perfnb-Run``) so the app keeps the data in
    a tenant of its own; ``sink`` receives the client-side records (perfnb's
    httpx instrumentation, when present).
    """
    if guests < 1 or seconds <= 0 or speed <= 0:
        msg = f"drive(): guests={guests}, seconds={seconds}, speed={speed}; expected all > 0"
        raise ValueError(msg)
    rng = random.Random(seed)
    result = TrafficResult()
    headers = {"X-Perfnb-Run": run_id} if run_id else {}
    start = time.monotonic()
    deadline = start + seconds / speed
    async with contextlib.AsyncExitStack() as stack:
        people = []
        for i in range(guests):
            client = await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)
            )
            if sink is not None:
                instrument(client, sink=sink, service=SERVICE, route=_route)
            people.append(
                _Guest(
                    i, client, random.Random(rng.random()), result, speed=speed, deadline=deadline
                )
            )
        await asyncio.gather(*(person.run() for person in people))
    result.seconds = time.monotonic() - start
    return result
