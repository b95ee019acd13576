"""Progress bars that suit both a terminal and a log file.

Every loop in the project that shows progress goes through :func:`progress_bar` (a drop-in for
``tqdm(...)``: same arguments, ``disable=`` included). On a terminal it is a plain tqdm bar. When
stderr is not a terminal (the demo piped into ``tee``, a batch job, a CI log) a bar redrawn with
carriage returns would fill the log, so the bar becomes a line writer instead:

- nothing when the loop starts;
- one full line at most every ``PROGRESS_INTERVAL_S`` seconds (environment, default 30) while it runs;
- one final line when a bar with ``leave=True`` closes (the step's count, time and rate), nothing for
  ``leave=False`` bars (inner loops), so a stage step writes one line unless it runs long.

:func:`terminal_bars` says whether a third-party bar (the Hugging Face ``Trainer``'s) should be shown:
only on a terminal, since it cannot be turned into lines.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

DEFAULT_INTERVAL_S = 30.0
"""Seconds between two lines of one bar when stderr is not a terminal."""

INTERVAL_ENV = "PROGRESS_INTERVAL_S"


def stderr_is_terminal() -> bool:
    """True when stderr (tqdm's stream) is an interactive terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def line_interval_s() -> float:
    """Seconds between lines in log mode: ``$PROGRESS_INTERVAL_S`` or :data:`DEFAULT_INTERVAL_S`."""
    raw = os.environ.get(INTERVAL_ENV, "")
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"{INTERVAL_ENV}={raw!r} is not a number of seconds (e.g. {INTERVAL_ENV}=30)"
        ) from None
    if value < 0:
        raise ValueError(f"{INTERVAL_ENV}={raw!r} must be >= 0 seconds")
    return value


def terminal_bars(enabled: bool = True) -> bool:
    """Whether to show a redrawn bar: ``enabled`` and stderr is a terminal."""
    return enabled and stderr_is_terminal()


class LineProgress(tqdm):
    """tqdm that writes whole lines (no carriage returns, ASCII bar) for log files.

    Built by :func:`progress_bar` with ``delay`` and ``mininterval`` set to the line interval, so tqdm's
    own throttling decides when a line is due; this class only changes how a display is written.
    """

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # tqdm clearing a finished leave=False bar: a log has nothing to clear
            return False
        self.fp.write((self.__str__() if msg is None else msg).strip() + "\n")
        self.fp.flush()
        return True

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = False, **kwargs: Any) -> None:
        """As tqdm's, but never writes a line by itself (tqdm's default ``refresh=True`` would)."""
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_description(self, desc: str | None = None, refresh: bool = False) -> None:
        """As tqdm's, but never writes a line by itself."""
        super().set_description(desc, refresh=False)

    def close(self) -> None:
        if self.disable:
            return
        if self.leave:
            self._ema_dt = lambda: None  # the final line gives the overall rate, as tqdm's does
            with self._lock:
                self.display()
        self.leave = False  # tqdm's close would add a newline or clear the bar: neither applies
        super().close()


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on a terminal, a :class:`LineProgress` otherwise; takes tqdm's arguments.

    Example: ``for x in progress_bar(items, desc="load", disable=not cfg.progress, leave=False): ...``
    """
    if kwargs.get("disable") or stderr_is_terminal():
        return tqdm(iterable, **kwargs)
    interval = line_interval_s()
    kwargs.setdefault("ascii", True)
    kwargs["mininterval"] = interval
    # tqdm's monitor thread redraws after maxinterval: keep it from printing between the lines
    kwargs["maxinterval"] = max(interval, kwargs.get("maxinterval", 10.0))
    kwargs["delay"] = interval  # no line when the loop starts
    return LineProgress(iterable, **kwargs)
