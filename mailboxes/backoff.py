"""The one backoff of mailhub: how long to wait before trying a failed thing again. Pure."""

from __future__ import annotations

import random
from datetime import timedelta


def backoff_delay(
    *,
    attempt: int,
    first: float,
    factor: int = 2,
    cap: float | None = None,
    max_exponent: int | None = None,
    jitter: float = 0.0,
) -> timedelta:
    """Delay before try number ``attempt + 1``: ``first * factor ** (attempt - 1)`` seconds.

    The exponent is at least 0 and, with ``max_exponent``, at most that (so a huge attempt count
    never builds a huge number); the delay is at most ``cap`` seconds; with ``jitter`` it is then
    spread uniformly over ±``jitter`` of itself, so that things that failed together (every
    mailbox of a server that went down) do not all come back in the same second.
    """
    exponent = max(attempt - 1, 0)
    if max_exponent is not None:
        exponent = min(exponent, max_exponent)
    delay = first * factor**exponent
    if cap is not None:
        delay = min(cap, delay)
    if jitter:
        delay = delay * random.uniform(1 - jitter, 1 + jitter)  # noqa: S311 - jitter, not crypto
    return timedelta(seconds=delay)
