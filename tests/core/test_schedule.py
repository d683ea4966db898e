"""The LR schedule: warmup + cosine or WSD, and how a plan is extended without a jump."""


import pytest

from mini_llm.schedule import LRPlan, lr_at
from mini_llm.train import TrainConfig


def test_lr_schedule():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0.0, 0, cfg) == pytest.approx(1e-4)
    assert lr_at(0.1, 9, cfg) == pytest.approx(1e-3)
    assert lr_at(0.0, 10, cfg) == pytest.approx(1e-3)
    assert lr_at(0.5, 50, cfg) == pytest.approx(0.55e-3)
    assert lr_at(1.0, 100, cfg) == pytest.approx(1e-4)


def wsd_config(**overrides):
    return TrainConfig(**dict(dict(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1, schedule="wsd", decay_fraction=0.2),
                              **overrides))


def test_wsd_warms_up_holds_then_decays_linearly():
    cfg = wsd_config()
    assert lr_at(0.0, 0, cfg) == pytest.approx(1e-4)  # warmup, as the cosine's
    assert lr_at(0.09, 9, cfg) == pytest.approx(1e-3)
    assert lr_at(0.1, 10, cfg) == lr_at(0.5, 50, cfg) == lr_at(0.79, 79, cfg) == 1e-3  # stable: the peak
    assert lr_at(0.8, 80, cfg) == pytest.approx(1e-3)  # where the decay begins
    assert lr_at(0.9, 90, cfg) == pytest.approx(0.55e-3)  # half-way down the straight line
    assert lr_at(1.0, 100, cfg) == pytest.approx(1e-4)  # the floor, lr * min_lr_ratio
    assert lr_at(1.0, 100, wsd_config(min_lr_ratio=0.0)) == 0.0
    assert lr_at(0.5, 50, wsd_config(decay_fraction=1.0)) == pytest.approx(0.55e-3)  # all decay: a straight line


def test_wsd_on_a_time_budget():
    plan = LRPlan(time_budget=100.0)
    assert plan.lr(500, 70.0, wsd_config()) == 1e-3
    assert plan.lr(500, 90.0, wsd_config()) == pytest.approx(0.55e-3)


def _curve(total, new_total, resume, cfg, seconds=0.0):
    """LRs of a run planned for `total` steps, stopped at `resume` and resumed for `new_total`."""
    plan = LRPlan(total)
    lrs = [plan.lr(s, seconds, cfg) for s in range(resume)]
    plan = plan.extended(resume, seconds, new_total, None, cfg)
    return lrs + [plan.lr(s, seconds, cfg) for s in range(resume, new_total + 1)], plan


@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
@pytest.mark.parametrize("total,new_total,resume", [(100, 200, 5), (100, 200, 50), (100, 200, 85), (100, 200, 100),
                                                      (100, 110, 75), (100, 60, 40), (100, 60, 55), (1000, 1500, 799)])
def test_resuming_with_another_horizon_never_jumps(schedule, total, new_total, resume):
    cfg = wsd_config(schedule=schedule)
    lrs, _ = _curve(total, new_total, resume, cfg)
    same, _ = _curve(total, total, resume, cfg)
    assert lrs[resume] == pytest.approx(same[resume], rel=1e-12)  # the first step after resume: the old plan's LR
    after_warmup = lrs[cfg.warmup_steps:]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(after_warmup, after_warmup[1:]))
    assert lrs[new_total] == pytest.approx(1e-4)  # at the floor at the new end


def test_wsd_extended_while_stable_is_the_run_planned_long_from_the_start():
    cfg = wsd_config()
    lrs, plan = _curve(100, 200, 50, cfg)
    assert plan == LRPlan(200) and lrs == [lr_at(s / 200, s, cfg) for s in range(201)]
    _, plan = _curve(100, 60, 55, cfg)  # shorter: its decay (from step 48) is already due ...
    assert plan.start_lr == 1e-3  # ... so it holds the peak, then decays from here


def test_wsd_resume_with_the_same_horizon_is_the_same_curve():
    cfg = wsd_config()
    lrs, plan = _curve(100, 100, 90, cfg)
    assert plan == LRPlan(100) and lrs == [lr_at(s / 100, s, cfg) for s in range(101)]
