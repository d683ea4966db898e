"""Muon (muon.py), its parameter groups in the training loop, and the warmup-stable-decay schedule."""

import argparse
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from mini_llm.errors import UserError
from mini_llm.model import MiniGPT
from mini_llm.muon import Muon, MuonWithAdamW, newton_schulz
from mini_llm.schedule import LRPlan, lr_at
from mini_llm.train import TrainConfig, add_arguments, config_from_args, configure_optimizer, train
from tests.conftest import interrupt_at, lr_by_step, one_error_line, run_cli, tiny_config

QUIET = dict(log=lambda *a: None, progress=False)


# --- newton_schulz ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(32, 96), (96, 32), (64, 128), (300, 8)])
def test_newton_schulz_moves_every_singular_value_near_one(shape):
    # columns scaled from 0.1 to 1: singular values spread over a factor of 5 to 15
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * torch.logspace(-1, 0, shape[1])
    X = newton_schulz(G, steps=5)
    assert X.shape == G.shape and X.dtype == torch.float32  # fp32 on the CPU, never bf16
    s = torch.linalg.svdvals(X)
    assert s.min() > 0.6 and s.max() < 1.25, s
    s_before = torch.linalg.svdvals(G)
    assert s_before.max() / s_before.min() > 4  # it really had different singular values to equalise


def test_newton_schulz_keeps_the_singular_vectors():
    """A square matrix with a spread of singular values (0.02 .. 1): the result is U f(S) V^T."""
    g = torch.Generator().manual_seed(1)
    U, _ = torch.linalg.qr(torch.randn(48, 48, generator=g))
    V, _ = torch.linalg.qr(torch.randn(48, 48, generator=g))
    S = torch.linspace(0.02, 1.0, 48)
    X = newton_schulz(U @ torch.diag(S) @ V.T)
    inner = U.T @ X @ V  # diagonal when the singular vectors are kept
    assert (inner - torch.diag(torch.diagonal(inner))).abs().max() < 1e-4
    assert torch.diagonal(inner).min() > 0.6 and torch.diagonal(inner).max() < 1.25


def test_newton_schulz_runs_in_the_dtype_asked_and_refuses_non_matrices():
    G = torch.randn(16, 8)
    assert newton_schulz(G, 5, dtype=torch.bfloat16).dtype == torch.bfloat16  # what CUDA uses
    with pytest.raises(ValueError, match="matrix"):
        newton_schulz(torch.randn(2, 3, 4))


# --- Muon, the optimizer --------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9")
@pytest.mark.parametrize("ns_dtype", [torch.bfloat16, None])
def test_muon_follows_torch_optim_muon(ns_dtype):
    """The same update rule as torch's Muon (momentum, Nesterov, weight decay, shape-aware LR):
    three steps on a tall and a wide matrix land where torch's do, up to bf16 rounding."""
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(48, 16, generator=g), torch.randn(16, 40, generator=g)]
    grads = [[torch.randn(*w.shape, generator=g) for w in start] for _ in range(3)]

    def three_steps(make):
        params = [torch.nn.Parameter(w.clone()) for w in start]
        opt = make(params)
        for step_grads in grads:
            for p, grad in zip(params, step_grads):
                p.grad = grad.clone()
            opt.step()
        return params

    ours = three_steps(lambda ps: Muon(ps, lr=0.02, momentum=0.95, weight_decay=0.01, ns_dtype=ns_dtype))
    theirs = three_steps(lambda ps: torch.optim.Muon(ps, lr=0.02, momentum=0.95, weight_decay=0.01))
    for a, b, w in zip(ours, theirs, start):
        moved = (b - w).abs().max()
        assert moved > 0.01 and (a - b).abs().max() < 0.05 * moved


def test_muon_refuses_tensors_that_are_not_matrices():
    with pytest.raises(ValueError, match="AdamW"):
        Muon([torch.nn.Parameter(torch.zeros(4))])


def _names(model, params) -> set:
    ids = {id(p) for p in params}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_muon_gets_the_blocks_matrices_and_adamw_the_rest(prepared):
    cfg = tiny_config(optimizer="muon", muon_lr=0.03)
    model = MiniGPT(cfg.model_config(prepared.vocab_size))
    opt = configure_optimizer(model, cfg, torch.device("cpu"))
    assert isinstance(opt, MuonWithAdamW)
    muon = [p for group in opt.muon.param_groups for p in group["params"]]
    adamw = [p for group in opt.adamw.param_groups for p in group["params"]]
    expected = {f"blocks.{i}.{m}.weight" for i in range(cfg.n_layer)
                for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert _names(model, muon) == expected
    every = [p for group in opt.param_groups for p in group["params"]]
    assert len(every) == len({id(p) for p in every}) == len(list(model.parameters()))  # each in exactly one group
    assert {"wte.weight", "wpe.weight", "ln_f.weight", "blocks.0.ln_1.bias", "blocks.0.attn.c_attn.bias"} <= \
        _names(model, adamw)
    decayed = _names(model, opt.adamw.param_groups[0]["params"])
    assert decayed == {"wte.weight", "wpe.weight"}  # the tied head is wte; gains and biases never decay
    group = opt.muon.param_groups[0]
    assert group["lr_scale"] == pytest.approx(0.03 / cfg.lr)
    assert group["lr"] * group["weight_decay"] == pytest.approx(cfg.lr * cfg.weight_decay)  # the same shrink per step


def test_adamw_stays_plain_adamw(prepared):
    cfg = tiny_config()
    model = MiniGPT(cfg.model_config(prepared.vocab_size))
    opt = configure_optimizer(model, cfg, torch.device("cpu"))
    assert type(opt) is torch.optim.AdamW and all("lr_scale" not in g for g in opt.param_groups)


def test_training_with_muon_lowers_the_loss(prepared, tmp_path):
    seen = {}
    out = tmp_path / "muon"
    train(tiny_config(optimizer="muon", log_interval=1), prepared=prepared, out=out,
          on_step=lambda step, loss: seen.setdefault(step, loss.item()), **QUIET)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    assert vals[-1] < math.log(300) - 0.5 and seen[30] < seen[1] - 0.5
    lrs = {r["step"]: r["lr"] for r in records if "lr" in r}
    assert lrs[10] == pytest.approx(lr_at(9 / 30, 9, tiny_config()))  # the logged LR is AdamW's (cfg.lr's schedule)


def test_resume_with_muon_and_wsd_is_exact(prepared, tmp_path):
    """2N steps straight == N steps, Ctrl-C, resume, N more steps (Muon's momentum is in train_state.pt;
    the interruption falls in WSD's stable phase, the rest of the run decays)."""
    cfg = dict(optimizer="muon", schedule="wsd", decay_fraction=0.4, max_steps=16, eval_interval=6)
    train(tiny_config(**cfg), prepared=prepared, out=tmp_path / "straight", **QUIET)

    summary = train(tiny_config(**cfg), prepared=prepared, out=tmp_path / "resumed", on_step=interrupt_at(8), **QUIET)
    assert summary["interrupted"] and summary["steps"] == 8
    state = torch.load(tmp_path / "resumed" / "last" / "train_state.pt", weights_only=False)
    assert set(state["optimizer"]) == {"adamw", "muon"} and state["optimizer"]["muon"]["state"]
    train(tiny_config(**cfg), prepared=prepared, out=tmp_path / "resumed", resume=True, **QUIET)
    a = load_file(str(tmp_path / "straight" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --- the warmup-stable-decay schedule --------------------------------------------------------------


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


def test_wsd_extending_a_finished_run_trains_on_at_the_floor(prepared, tmp_path):
    cfg = dict(eval_interval=100, log_interval=1, warmup_steps=5, min_lr_ratio=0.1, schedule="wsd")
    out = tmp_path / "run"
    train(tiny_config(max_steps=20, **cfg), prepared=prepared, out=out, **QUIET)
    train(tiny_config(max_steps=40, **cfg), prepared=prepared, out=out, resume=True, **QUIET)
    lr = lr_by_step(out)
    after_warmup = [lr[s] for s in sorted(lr) if s > 5]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(after_warmup, after_warmup[1:])), after_warmup
    assert lr[6] == 3e-3 and lr[21] == pytest.approx(3e-4) and lr[40] == pytest.approx(3e-4)


def test_wsd_extending_an_interrupted_stable_run_keeps_the_peak(prepared, tmp_path):
    cfg = dict(eval_interval=100, log_interval=1, warmup_steps=5, min_lr_ratio=0.1, schedule="wsd", decay_fraction=0.5)

    out = tmp_path / "run"
    train(tiny_config(max_steps=20, **cfg), prepared=prepared, out=out, on_step=interrupt_at(8), **QUIET)
    train(tiny_config(max_steps=40, **cfg), prepared=prepared, out=out, resume=True, **QUIET)
    lr = lr_by_step(out)
    assert sorted(lr) == [s for s in range(1, 41) if s != 8]  # (step 8's log line was cut by the Ctrl-C)
    assert all(lr[s] == 3e-3 for s in lr if 6 <= s <= 20)  # at the peak until the new horizon's decay: step 20 of 40
    planned_40 = {s: lr_at((s - 1) / 40, s - 1, tiny_config(**cfg)) for s in lr}  # as if planned so from the start
    assert lr == pytest.approx(planned_40, rel=1e-12)


# --- flags ----------------------------------------------------------------------------------------


def test_the_flags_set_the_fields():
    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--optimizer", "muon", "--muon-lr", "0.05", "--muon-momentum", "0.9",
                                         "--schedule", "wsd", "--decay-fraction", "0.3"]))
    assert (cfg.optimizer, cfg.muon_lr, cfg.muon_momentum, cfg.schedule, cfg.decay_fraction) == \
        ("muon", 0.05, 0.9, "wsd", 0.3)
    defaults = config_from_args(p.parse_args([]))
    assert (defaults.arch, defaults.optimizer, defaults.lr, defaults.schedule) == ("tuned", "muon", 3e-3, "cosine")
    classic = config_from_args(p.parse_args(["--arch", "gpt2"]))  # no flag's default may pin the arch's choices
    assert (classic.optimizer, classic.lr, classic.pos) == ("adamw", 2e-3, "learned")


@pytest.mark.parametrize("field,value,message", [
    ("optimizer", "sgd", "--optimizer must be 'adamw' or 'muon'"), ("schedule", "linear", "--schedule must be"),
    ("muon_lr", 0.0, "--muon-lr must be positive"), ("muon_momentum", 1.0, "--muon-momentum must be in [0, 1)"),
    ("decay_fraction", 0.0, "--decay-fraction must be in (0, 1]"), ("decay_fraction", 1.5, "--decay-fraction")])
def test_bad_values_are_refused(field, value, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        tiny_config(**{field: value}).validate()


def test_cli_bad_values_give_one_line(corpus_file):
    assert "--decay-fraction must be in (0, 1]" in one_error_line(
        run_cli("train", "--data", corpus_file, "--schedule", "wsd", "--decay-fraction", "0"))
    assert "--optimizer must be 'adamw' or 'muon' (got 'sgd')" in one_error_line(
        run_cli("train", "--data", corpus_file, "--optimizer", "sgd"))
