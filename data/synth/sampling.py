"""Random motion programs whose nominal length fits a clip.

Apart from ``data.synth.program`` because the length check needs the renderer's timing
(``render.program_duration``) and the renderer is built on the program schema.
"""

from __future__ import annotations

import numpy as np

from data.synth.program import MAX_PROGRAM_SECONDS, MotionProgram, draw_program
from data.synth.render import program_duration

MAX_REDRAWS = 50
"""Redraws before the last (too long) program is kept; rendering then cuts it at 9.8 s."""


def sample_program(rng: np.random.Generator) -> MotionProgram:
    """Draw programs with ``draw_program`` until the nominal length is <= ``MAX_PROGRAM_SECONDS``.

    So rendered motions are rarely cut at 9.8 s. Same draws, in the same order, as before the split
    from ``program.py``: datasets built with a seed are unchanged.
    """
    program = draw_program(rng)
    for _ in range(MAX_REDRAWS):
        if program_duration(program) <= MAX_PROGRAM_SECONDS:
            break
        program = draw_program(rng)
    return program
