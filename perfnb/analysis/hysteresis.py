"""A level that moves only after enough consecutive windows agree: states that do not flap.

Each window is judged twice: with the *enter* thresholds (how bad it is, for
getting worse) and with the lower *leave* thresholds (how bad it still is, for
recovering). The level rises after ``enter`` consecutive windows judged worse
than it, and falls after ``leave`` consecutive windows judged better than it by
the leave thresholds. A value that hovers at one threshold therefore never
flips back and forth: between the two thresholds the level stays where it is.

>>> h = Hysteresis(enter=2, leave=2)
>>> [h.update(up, down) for up, down in [(1, 1), (1, 1), (0, 1), (0, 0), (0, 0)]]
[False, True, False, False, True]
>>> h.level
0
"""

from __future__ import annotations

__all__ = ["Hysteresis"]


class Hysteresis:
    """A level (0 = fine, higher = worse) with entry and exit confirmation.

    ``update(up, down)`` takes the window's level by the enter thresholds
    (``up``) and by the leave thresholds (``down``, never below ``up``) and says
    whether the level changed. A rise goes to the mildest level the streak agreed
    on; a fall to the worst level the streak still held.
    """

    __slots__ = ("_count", "_direction", "_target", "enter", "leave", "level")

    def __init__(self, *, enter: int, leave: int, level: int = 0) -> None:
        self.enter = enter
        self.leave = leave
        self.level = level
        self._direction = 0
        self._count = 0
        self._target = level

    def update(self, up: int, down: int) -> bool:
        """Feed one judged window; ``True`` when the level changed."""
        down = max(up, down)
        if up > self.level:
            direction, target, need = 1, up, self.enter
        elif down < self.level:
            direction, target, need = -1, down, self.leave
        else:
            self._direction = self._count = 0
            return False
        if direction != self._direction:
            self._direction, self._count, self._target = direction, 0, target
        self._count += 1
        # Rising: the mildest level of the streak; falling: the worst it still held.
        self._target = min(self._target, target) if direction > 0 else max(self._target, target)
        if self._count < need:
            return False
        self.level = self._target
        self._direction = self._count = 0
        return True

    def reset(self, level: int = 0) -> None:
        """Forget the streak and set the level."""
        self.level = self._target = level
        self._direction = self._count = 0
