"""The learning-rate schedule: linear warmup, then cosine decay to a floor; and how it is
re-planned when a run is extended.

    lr
    |   /‾‾‾‾-._
    |  /        `-._
    | /             `-.____ lr * min_lr_ratio
    +-------------------------> progress (steps or seconds of the budget)

A run plans its cosine for the horizon it was started with (`max_steps`, `epochs` or
`time_budget`). Resuming with the same horizon continues the same curve, so resume is exact.
Resuming with another horizon never makes the LR jump: from where it stands, a new cosine runs
down to the floor at the new end. A finished run sits at the floor, so extending it trains on
at the floor LR; an interrupted run extended decays more slowly from its current LR.
"""

import math
from dataclasses import dataclass


def lr_at(progress: float, step: int, cfg) -> float:
    """Linear warmup over `cfg.warmup_steps`, then cosine from cfg.lr to cfg.lr * cfg.min_lr_ratio
    as progress goes 0 -> 1 (nanoGPT's schedule)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cosine(progress, cfg.lr, cfg.lr * cfg.min_lr_ratio)


def cosine(progress: float, start: float, end: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class LRPlan:
    """The cosine in force: where it starts (step, seconds, LR; None = the peak, after warmup)
    and the horizon it ends at (steps and/or seconds of the whole run)."""

    total_steps: int | None = None
    time_budget: float | None = None
    start_step: int = 0
    start_seconds: float = 0.0
    start_lr: float | None = None

    def progress(self, step: int, seconds: float) -> float:
        """How far through the plan (0 -> 1): the larger of the step and the time fractions."""
        fractions = [0.0]
        if self.total_steps:
            fractions.append((step - self.start_step) / max(self.total_steps - self.start_step, 1))
        if self.time_budget:
            fractions.append((seconds - self.start_seconds) / max(self.time_budget - self.start_seconds, 1e-9))
        return max(fractions)

    def lr(self, step: int, seconds: float, cfg) -> float:
        if self.start_lr is None:
            return lr_at(self.progress(step, seconds), step, cfg)
        return cosine(self.progress(step, seconds), self.start_lr, cfg.lr * cfg.min_lr_ratio)

    def extended(self, step: int, seconds: float, total_steps: int | None, time_budget: float | None, cfg) -> "LRPlan":
        """The plan for a resumed run: the same one for the same horizon; else a new cosine from
        the LR reached now to the floor at the new end (or, still in warmup, the plan the run
        would have had with the new horizon from the start)."""
        if (total_steps, time_budget) == (self.total_steps, self.time_budget):
            return self
        if self.start_lr is None and step < cfg.warmup_steps:
            return LRPlan(total_steps, time_budget)
        return LRPlan(total_steps, time_budget, step, seconds, self.lr(step, seconds, cfg))
