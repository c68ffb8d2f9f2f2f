"""A base for perfnb's objects that hold something open: ``with x:`` closes ``x``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["Closing"]


class Closing(ABC):
    """Gives a class with a ``close()`` method the ``with`` statement.

    >>> class Tap(Closing):
    ...     def close(self) -> None:
    ...         print("closed")
    >>> with Tap():
    ...     pass
    closed
    """

    @abstractmethod
    def close(self) -> None:
        """Release what the object holds; closing twice does nothing."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
