"""An example sampler plugin: ``no_repeat`` bans the tokens picked in the last few steps.

Requests use it by naming it in ``samplers``, e.g.
``{"samplers": ["no_repeat", "top_k", "temperature"], ...}``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from llama_box_core.hookspecs import hookimpl
from llama_box_core.model import Model
from llama_box_core.types import Candidates, SamplingParams, StageFactory

WINDOW = 8


class NoRepeat:
    """One request's stage: remembers its recent picks and bans them."""

    def __init__(self, window: int = WINDOW) -> None:
        self.recent: deque[int] = deque(maxlen=window)

    def apply(self, candidates: Candidates) -> None:
        if self.recent:
            banned = np.isin(candidates.ids, np.fromiter(self.recent, dtype=np.int32))
            candidates.logits[banned] = -np.inf

    def accept(self, token: int) -> None:
        self.recent.append(token)


def make_stage(params: SamplingParams, model: Model) -> NoRepeat:
    return NoRepeat()


@hookimpl
def llama_box_sampler_stages(register: Callable[[str, StageFactory], None]) -> None:
    register("no_repeat", make_stage)
