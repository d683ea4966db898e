r"""The learning-rate schedule: linear warmup, then a decay to a floor, in one of two shapes;
and how it is re-planned when a run is extended.

    cosine (default)                          wsd: warmup-stable-decay
    lr                                        lr
    |   /‾‾‾‾-._                              |   /‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾‾\
    |  /        `-._                          |  /                   \
    | /             `-.____ lr * min_lr_ratio | /                     \_ lr * min_lr_ratio
    +-------------------------> progress      +-------------------------> progress
                                                                 |decay|  the last decay_fraction

progress is the fraction of the run's budget done (steps or seconds, whichever ends it first).
WSD holds the peak LR and decays in a straight line only at the end, so the stable part does not
depend on the horizon; it decays to the same floor as the cosine (not to 0), so extending a
finished run still trains.

A run plans its schedule for the horizon it was started with (`max_steps`, `epochs` or
`time_budget`). Resuming with the same horizon continues the same curve, so resume is exact.
Resuming with another horizon never makes the LR jump: from where it stands, a new curve of the
same shape runs down to the floor at the new end (WSD: holds the current LR, then decays over the
last decay_fraction of what is left). A finished run sits at the floor, so extending it trains on
at the floor LR; an interrupted run extended decays more slowly from its current LR. A run still
in warmup, or a WSD run still at its peak with the new horizon's decay not yet due, simply takes
the plan it would have had with the new horizon from the start.
"""

import math
from dataclasses import dataclass


def lr_at(progress: float, step: int, cfg) -> float:
    """Linear warmup, then the decay from cfg.lr to cfg.lr * cfg.min_lr_ratio.

    Warmup: step s (counting from 0) of the first cfg.warmup_steps gets cfg.lr * (s + 1) / warmup_steps,
    so the first step already moves. After it, the LR is the decay's value at `progress`, the
    fraction of the whole run done, counted from step 0: the curve is planned over the whole run
    and the warmup covers its start. (nanoGPT counts its cosine from the end of the warmup instead:
    right after warmup its LR is the peak, and this one has already decayed by as much as the
    curve does over the warmup's share of the run.)"""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return decay(progress, cfg.lr, cfg)


def decay(progress: float, start: float, cfg) -> float:
    """From `start` down to the floor cfg.lr * cfg.min_lr_ratio, in cfg.schedule's shape. (cfg:
    a TrainConfig, or anything with lr and min_lr_ratio; one that names no schedule is cosine.)"""
    end = cfg.lr * cfg.min_lr_ratio
    if getattr(cfg, "schedule", "cosine") == "wsd":
        return stable_then_linear(progress, start, end, cfg.decay_fraction)
    return cosine(progress, start, end)


def cosine(progress: float, start: float, end: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


def stable_then_linear(progress: float, start: float, end: float, decay_fraction: float) -> float:
    """`start` until the last `decay_fraction` of progress, then a straight line down to `end`."""
    left = (1 - min(progress, 1.0)) / decay_fraction  # the share of the decay still ahead: >= 1 before it starts
    return start if left >= 1 else end + (start - end) * left


@dataclass
class LRPlan:
    """The curve in force: where it starts (step, seconds, LR; None = the peak, after warmup)
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
        return decay(self.progress(step, seconds), self.start_lr, cfg)

    def extended(self, step: int, seconds: float, total_steps: int | None, time_budget: float | None, cfg) -> "LRPlan":
        """The plan for a resumed run: the same one for the same horizon; still in warmup (or in
        WSD's stable phase under both horizons), the plan the run would have had with the new
        horizon from the start; else a new curve from the LR reached now to the floor at the new end."""
        if (total_steps, time_budget) == (self.total_steps, self.time_budget):
            return self
        fresh = LRPlan(total_steps, time_budget)
        if self.start_lr is None and (step < cfg.warmup_steps
                                      or (self.stable(step, seconds, cfg) and fresh.stable(step, seconds, cfg))):
            return fresh
        return LRPlan(total_steps, time_budget, step, seconds, self.lr(step, seconds, cfg))

    def stable(self, step: int, seconds: float, cfg) -> bool:
        """WSD: is this plan still holding its LR (its decay not begun)?"""
        return getattr(cfg, "schedule", "cosine") == "wsd" and self.progress(step, seconds) < 1 - cfg.decay_fraction
