"""The ``text/event-stream`` format (Server-Sent Events), parsed from raw bytes.

The feed client reads perfnb's feed with it; it follows the HTML standard's
parsing rules, so it reads any server's event stream.

>>> SSEParser().feed(b"event: hello\\ndata: {}\\n\\n")
[SSEEvent(event='hello', data='{}', last_event_id='')]
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SSEEvent", "SSEParser", "position_of"]


class SSEEvent(NamedTuple):
    """One dispatched event: its type, its data, and the last event id at that point."""

    event: str
    data: str
    last_event_id: str


_BOM = b"\xef\xbb\xbf"


class SSEParser:
    """The ``text/event-stream`` format, fed raw bytes as they arrive.

    Lines end in CR LF, LF or CR (also split across chunks); ``data`` lines join
    with LF; ``id`` persists until changed; comments and unknown fields are
    ignored, as the HTML standard says.

    >>> parser = SSEParser()
    >>> parser.feed(b"id: a:1\\r\\nevent: records\\r\\ndata: {}\\r\\n\\r\\n: ping\\n\\n")
    [SSEEvent(event='records', data='{}', last_event_id='a:1')]
    """

    __slots__ = ("_bom_checked", "_buffer", "_cr", "_data", "_event", "last_event_id", "retry")

    def __init__(self, *, last_event_id: str = "") -> None:
        self._buffer = b""
        self._cr = False
        self._bom_checked = False
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = last_event_id
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk``; return the events it completed."""
        if not chunk:
            return []
        if self._cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._cr = False
        data = self._buffer + chunk
        if not self._bom_checked:
            if len(data) < 3 and _BOM.startswith(data):
                self._buffer = data  # too short to tell yet
                return []
            self._bom_checked = True
            data = data.removeprefix(_BOM)
        events: list[SSEEvent] = []
        start = 0
        size = len(data)
        while start < size:
            lf = data.find(b"\n", start)
            cr = data.find(b"\r", start, lf if lf >= 0 else size)
            if cr >= 0:
                end, skip = cr, 1
                if cr + 1 < size and data[cr + 1 : cr + 2] == b"\n":
                    skip = 2
                elif cr + 1 == size:
                    self._cr = True  # an LF may open the next chunk
            elif lf >= 0:
                end, skip = lf, 1
            else:
                break
            found = self._line(data[start:end].decode("utf-8", "replace"))
            if found is not None:
                events.append(found)
            start = end + skip
        self._buffer = data[start:]
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            found = SSEEvent(self._event or "message", "\n".join(self._data), self.last_event_id)
            self._data = []
            self._event = ""
            return found
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isdigit() and value.isascii():
            self.retry = int(value)
        return None


def position_of(event_id: str, boot: str) -> int:
    """How far a perfnb feed's event id has read one app process (``boot``): 0 if not.

    Ids are resume tokens to send back as they came; this reads one only to tell
    whether a consumer caught up with a number the process's ``/control`` gave.
    A one-process id is ``<boot>:<seq>``, a fleet's ``<boot>:<seq>,<boot>:<seq>,…``.

    >>> position_of("ab:3,cd:9", "cd"), position_of("ab:3", "ab"), position_of("", "ab")
    (9, 3, 0)
    """
    for part in event_id.split(","):
        name, _, seq = part.strip().rpartition(":")
        if name == boot and seq.isdigit():
            return int(seq)
    return 0
