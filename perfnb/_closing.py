"""A base for perfnb's objects that hold something open: ``with x:`` closes ``x``."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Closing"]


class Closing:
    """Gives a class with a ``close()`` method the ``with`` statement.

    >>> class Tap(Closing):
    ...     def close(self) -> None:
    ...         print("closed")
    >>> with Tap():
    ...     pass
    closed
    """

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
