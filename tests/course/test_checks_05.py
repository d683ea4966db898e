"""The exercise checks of notebook 05: right answers (in every standard form) pass, public and
hidden cases; wrong ones fail naming the input; echoing the inputs fails; unwritten says so;
changing the inputs in place cannot fool them. Then the notebook's exercise cells."""

import math
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from mini_llm.course import checks as ex
from mini_llm.schedule import LRPlan
from tests.course.check_contract import (
    assert_checks_leave_the_global_rng_alone,
    assert_proofs_are_portable,
    contract_tests,
    notebook_tests,
)

# --- extended_lr: the LR of a resumed run with a new horizon ------------------------------------


def lr_package(step, total, max_lr, warmup, min_lr):
    if step < warmup:
        return max_lr * (step + 1) / warmup
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * step / total))


def lr_nanogpt(step, total, max_lr, warmup, min_lr):  # nanoGPT's get_lr: cosine after warmup
    if step < warmup:
        return max_lr * (step + 1) / (warmup + 1)
    if step > total:
        return min_lr
    ratio = (step - warmup) / (total - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


def extended_with(schedule):
    def extended_lr(step, total, new_total, resume, max_lr, warmup, min_lr):
        if step < resume or new_total == total:
            return schedule(step, total, max_lr, warmup, min_lr)
        if resume < warmup:
            return schedule(step, new_total, max_lr, warmup, min_lr)
        start = schedule(resume, total, max_lr, warmup, min_lr)
        progress = (step - resume) / (new_total - resume)
        return min_lr + (start - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    return extended_lr


def extended_by_lrplan(step, total, new_total, resume, max_lr, warmup, min_lr):
    """The package's own rule, through LRPlan, as a tensor."""
    cfg = SimpleNamespace(lr=max_lr, warmup_steps=warmup, min_lr_ratio=min_lr / max_lr)
    plan = LRPlan(total)
    if step >= resume:
        plan = plan.extended(resume, 0.0, new_total, None, cfg)
    return torch.tensor(plan.lr(step, 0.0, cfg), dtype=torch.float64)


def ext_ignores_same_horizon(step, total, new_total, resume, max_lr, warmup, min_lr):
    if step < resume:
        return lr_package(step, total, max_lr, warmup, min_lr)
    if resume < warmup:
        return lr_package(step, new_total, max_lr, warmup, min_lr)
    start = lr_package(resume, total, max_lr, warmup, min_lr)
    return min_lr + (start - min_lr) * 0.5 * (1 + math.cos(math.pi * (step - resume) / (new_total - resume)))


def ext_jumps(step, total, new_total, resume, max_lr, warmup, min_lr):  # a fresh cosine from the peak
    if step < resume:
        return lr_package(step, total, max_lr, warmup, min_lr)
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (step - resume) / (new_total - resume)))


def ext_new_plan_always(step, total, new_total, resume, max_lr, warmup, min_lr):  # the LR jumps at resume
    return lr_package(step, total if step < resume else new_total, max_lr, warmup, min_lr)


# --- accumulate: gradients of the mean over all tokens, micro-batch by micro-batch --------------


def accumulate(model, batches):
    n = sum(y.numel() for _, y in batches)
    mean = 0.0
    for x, y in batches:
        _, loss = model(x, y)
        (loss * y.numel() / n).backward()
        mean += loss.item() * y.numel() / n
    return mean


def accumulate_summed(model, batches):  # another correct form: summed token losses, a 0-d tensor back
    n = sum(y.numel() for _, y in batches)
    total = torch.zeros(())
    for x, y in batches:
        logits, _ = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1), reduction="sum") / n
        loss.backward()
        total = total + loss.detach()
    return total


def accumulate_by_k(model, batches):  # right only for equal micro-batches
    mean = 0.0
    for x, y in batches:
        _, loss = model(x, y)
        (loss / len(batches)).backward()
        mean += loss.item() / len(batches)
    return mean


def accumulate_unscaled(model, batches):
    n = sum(y.numel() for _, y in batches)
    mean = 0.0
    for x, y in batches:
        _, loss = model(x, y)
        loss.backward()
        mean += loss.item() * y.numel() / n
    return mean


def accumulate_and_step(model, batches):  # also takes an optimizer step: the weights change
    result = accumulate(model, batches)
    with torch.no_grad():
        for p in model.parameters():
            p -= 1e-3 * p.grad
    return result


def accumulate_without_backward(model, batches):
    with torch.no_grad():
        n = sum(y.numel() for _, y in batches)
        return sum(model(x, y)[1].item() * y.numel() / n for x, y in batches)


def accumulate_in_place_trick(model, batches):
    """Rewrites the caller's batches so every target is token 0, then accumulates on them."""
    for _, y in batches:
        y.zero_()
    return accumulate(model, batches)


# --- decay_groups: the module-type rule ----------------------------------------------------------


def decay_groups(model, weight_decay):
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            (decay if isinstance(module, nn.Linear) and name == "weight" and id(p) not in embeddings else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def decay_groups_per_tensor(model, weight_decay):
    """Another correct form: one group per tensor, a tuple, params as tuples, by names."""
    modules = dict(model.named_modules())
    embedding_tensors = {id(m.weight) for m in modules.values() if isinstance(m, nn.Embedding)}
    groups = []
    for name, p in model.named_parameters():  # tied tensors are listed once
        owner, _, leaf = name.rpartition(".")
        linear = isinstance(modules[owner], nn.Linear) and leaf == "weight"
        groups.append({"params": (p,), "weight_decay": weight_decay if linear and id(p) not in embedding_tensors else 0})
    return tuple(groups)


def decay_groups_generators(model, weight_decay):  # another correct form: generators, by names (a tied tensor is listed once)
    decay = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    named = list(model.named_parameters())
    return [{"params": (p for n, p in named if n.endswith(".weight") and n.rpartition(".")[0] in decay),
             "weight_decay": weight_decay},
            {"params": (p for n, p in named if not (n.endswith(".weight") and n.rpartition(".")[0] in decay)),
             "weight_decay": 0.0}]


def groups_by_dim(model, weight_decay):  # the shape rule of section 4: embeddings decay
    ps = list(model.parameters())
    return [{"params": [p for p in ps if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in ps if p.dim() < 2], "weight_decay": 0.0}]


def groups_tied_twice(model, weight_decay):  # forgets the tie: wte.weight in both groups
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            (decay if isinstance(module, nn.Linear) and name == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def groups_without_weight_decay_key(model, weight_decay):
    groups = decay_groups(model, weight_decay)
    del groups[1]["weight_decay"]  # AdamW would give it its default, 0.01
    return groups


def groups_decaying_layernorm(model, weight_decay):
    groups = decay_groups(model, weight_decay)
    ln = [p for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()]
    ids = {id(p) for p in ln}
    return [{"params": groups[0]["params"] + ln, "weight_decay": weight_decay},
            {"params": [p for p in groups[1]["params"] if id(p) not in ids], "weight_decay": 0.0}]


def groups_untie_first(model, weight_decay):
    """In place: unties the LM head (a new tensor), so the naive rule no longer meets a tie."""
    for m in model.modules():
        if hasattr(m, "lm_head"):
            m.lm_head.weight = nn.Parameter(m.lm_head.weight.detach().clone())
    return groups_tied_twice(model, weight_decay)


# check -> (right answers, wrong answers, what echoing the inputs looks like)
CASES = {
    ex.check_extended_lr: ([extended_with(lr_package), extended_with(lr_nanogpt), extended_by_lrplan],
                           [ext_ignores_same_horizon, ext_jumps, ext_new_plan_always,
                            lambda step, total, new_total, resume, max_lr, warmup, min_lr:
                            lr_package(step, total, max_lr, warmup, min_lr),
                            lambda *a: extended_with(lr_package)(*a) * 1.001],
                           lambda step, *rest: step),
    ex.check_accumulate: ([accumulate, accumulate_summed],
                          [accumulate_by_k, accumulate_unscaled, accumulate_and_step, accumulate_without_backward,
                           lambda model, batches: accumulate(model, batches) + 0.5],
                          lambda model, batches: batches),
    ex.check_decay_groups: ([decay_groups, decay_groups_per_tensor, decay_groups_generators],
                            [groups_by_dim, groups_tied_twice, groups_without_weight_decay_key,
                             groups_decaying_layernorm, lambda model, wd: decay_groups(model, wd)[:1]],
                            lambda model, wd: model),
}


(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES, may_raise=False)


def test_hidden_cases_are_different_inputs():
    """A function that memorises the public cases passes them and fails the hidden ones."""
    right = extended_with(lr_package)
    seen = {}

    def recorder(*args):
        seen[args] = right(*args)
        return seen[args]

    assert ex.check_extended_lr(recorder)
    public = dict(seen)
    cheat = lambda *args: public[args]  # noqa: E731
    assert ex.check_extended_lr(cheat)
    result = ex.check_extended_lr(cheat, hidden=True)
    assert not result and "raised KeyError" in result.message


def test_equal_micro_batches_pass_public_but_not_hidden_by_k():
    """Dividing by k is right for equal micro-batches (the notebook's case) and wrong otherwise."""
    result = ex.check_accumulate(accumulate_by_k)
    assert not result and "(2, 16), (3, 5), (1, 9)" in result.message, result.message
    assert "off by up to" in result.message


def test_mutating_the_inputs_cannot_fool_a_check():
    result = ex.check_accumulate(accumulate_in_place_trick)
    assert not result and "off by up to" in result.message, result.message
    result = ex.check_accumulate(accumulate_and_step)
    assert not result and "the weights changed" in result.message
    result = ex.check_decay_groups(groups_untie_first)
    assert not result and "not one of the model's parameters" in result.message, result.message


def test_feedback_is_specific():
    result = ex.check_extended_lr(ext_ignores_same_horizon)
    assert "extended lr(70, 100, 100, 50, 0.001, 10, 0.0001): expected 0.000" in result.message, result.message
    assert "nanoGPT's form" in result.message
    result = ex.check_decay_groups(groups_tied_twice)
    assert "decay groups(MiniGPT(1 layer, 16 wide), 0.1)" in result.message
    assert "wte.weight in two groups" in result.message
    result = ex.check_decay_groups(groups_by_dim)
    assert "wte.weight at weight_decay 0.1: it is an embedding" in result.message, result.message
    result = ex.check_decay_groups(groups_without_weight_decay_key)
    assert "not a list of groups" in result.message and "KeyError" in result.message
    result = ex.check_accumulate(lambda model, batches: model)
    assert "got a MiniGPT: not a loss" in result.message, result.message
    result = ex.check_accumulate(accumulate_without_backward)
    assert ".grad is None" in result.message


def test_the_checks_leave_the_global_rng_alone():
    """The checks build their models under their own seeds and restore the learner's RNG."""
    assert_checks_leave_the_global_rng_alone(CASES)
    a, b = ex.check_accumulate(accumulate_by_k, hidden=True), ex.check_accumulate(accumulate_by_k, hidden=True)
    assert a.message == b.message


# --- the exercise cells of notebook 05 ------------------------------------------------------------






def test_the_notebook_proves_its_equalities_and_checks_only_portable_output():
    assert_proofs_are_portable("05_training", 10, 15)


(test_three_exercises_with_public_and_hidden_checks, test_student_copy_exercises_say_not_written_yet,
 test_every_check_is_used_in_the_notebook) = notebook_tests("05_training", CASES, ex, {"math": math, "torch": torch})
