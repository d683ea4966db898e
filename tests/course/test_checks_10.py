"""The checks of notebook 10_gpt2_and_transformers: right answers (in other correct forms too) pass, public
and hidden cases; wrong ones fail naming the input and the first difference; echoing the inputs fails;
unwritten says so; each step hands on yours or the package's piece. The expected values agree with
transformers' own models. Then the notebook's step and exercise cells."""

import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402

from mini_llm.course import checks as ex  # noqa: E402
from mini_llm.course.checks import nb10_gpt2_and_transformers as nb10  # noqa: E402
from mini_llm.model import GPTConfig, MiniGPT  # noqa: E402
from tests.course.check_contract import (  # noqa: E402
    assert_checks_leave_the_global_rng_alone,
    assert_proofs_are_portable,
    contract_tests,
    notebook_tests,
    step_tests,
)

NOTEBOOK = "10_gpt2_and_transformers"
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

# --- step 1: the config ----------------------------------------------------------------------------


def config_spelled_out(c):  # the notebook's: every value written, the defaults said aloud
    return GPTConfig(vocab_size=c.vocab_size, block_size=c.n_positions, n_embd=c.n_embd, n_head=c.n_head,
                     n_layer=c.n_layer, mlp_width=c.n_inner, norm_eps=c.layer_norm_epsilon,
                     tie_head=c.tie_word_embeddings, pos="learned", norm="layernorm", mlp="gelu", bias=True)


def config_as_numbers(c):  # another correct form: the width as a number, GPT-2's dropout kept, a dict of fields
    fields = dict(vocab_size=c.vocab_size, block_size=c.n_positions, n_embd=c.n_embd, n_head=c.n_head,
                  n_layer=c.n_layer, mlp_width=c.n_inner or 4 * c.n_embd, dropout=c.resid_pdrop,
                  norm_eps=None if c.layer_norm_epsilon == 1e-5 else c.layer_norm_epsilon)
    return GPTConfig(**fields, tie_head=bool(c.tie_word_embeddings))


def config_without(**wrong):
    return lambda c: GPTConfig(**{**config_spelled_out(c).to_dict(), **wrong})


def config_width_always_4c(c):  # wrong: n_inner ignored
    return config_without(mlp_width=None)(c)


def config_always_tied(c):  # wrong: tie_word_embeddings ignored
    return config_without(tie_head=True)(c)


def config_heads_and_layers_swapped(c):  # wrong: raises where the width does not divide into n_layer heads
    return config_without(n_head=c.n_layer, n_layer=c.n_head)(c)


def config_context_from_width(c):  # wrong: the context read from another field
    return config_without(block_size=c.n_embd)(c)


def config_rmsnorm(c):  # wrong: another norm
    return config_without(norm="rmsnorm")(c)


# --- step 2: GPT-2's weights as ours -------------------------------------------------------------------


def to_ours(state, config):  # the notebook's
    ours = {}
    for name, t in state.items():
        name = name.removeprefix("transformer.")
        if name.startswith("h."):
            name = "blocks." + name.removeprefix("h.")
        ours[name] = t.t() if name.endswith(CONV1D) else t
    return ours


def to_ours_by_name(state, config):  # another correct form: every name of ours built from the config, copies
    ours = {"wte.weight": state["transformer.wte.weight"].clone(), "wpe.weight": state["transformer.wpe.weight"].clone(),
            "lm_head.weight": state["lm_head.weight"].clone()}
    for part in ("weight", "bias"):
        ours[f"ln_f.{part}"] = state[f"transformer.ln_f.{part}"]
        for i in range(config.n_layer):
            for module in ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                t = state[f"transformer.h.{i}.{module}.{part}"]
                ours[f"blocks.{i}.{module}.{part}"] = t.T.contiguous() if part == "weight" and "ln" not in module else t
    return ours


def to_ours_untransposed(state, config):  # wrong: Conv1D's layout kept
    return {k: v for k, v in zip(to_ours(state, config), state.values())}


def to_ours_attn_proj_untransposed(state, config):  # wrong: the square c_proj forgotten (its shape fits)
    ours = to_ours(state, config)
    return {k: v.t() if k.endswith("attn.c_proj.weight") else v for k, v in ours.items()}


def to_ours_head_from_wte(state, config):  # wrong: the head assumed tied (an untied GPT-2 in the hidden cases)
    return dict(to_ours(state, config), **{"lm_head.weight": state["transformer.wte.weight"]})


def to_ours_prefix_kept(state, config):
    return {k.replace("h.", "blocks.", 1) if k.startswith("h.") else k: v for k, v in to_ours(state, config).items()
            } | {"transformer.wte.weight": state["transformer.wte.weight"]}


# --- step 3: ours as GPT-2's -------------------------------------------------------------------------


def to_gpt2(state, config):  # the notebook's
    theirs = {}
    for name, t in state.items():
        if name.endswith(CONV1D):
            t = t.t()
        if name.startswith("blocks."):
            name = "h." + name.removeprefix("blocks.")
        theirs[name if name.startswith("lm_head.") else "transformer." + name] = t
    return theirs


def to_gpt2_by_name(state, config):  # another correct form: every name of GPT-2's built from the config, copies
    theirs = {"transformer.wte.weight": state["wte.weight"].clone(), "transformer.wpe.weight": state["wpe.weight"].clone(),
              "lm_head.weight": state["lm_head.weight"].clone()}
    for part in ("weight", "bias"):
        theirs[f"transformer.ln_f.{part}"] = state[f"ln_f.{part}"]
        for i in range(config.n_layer):
            for module in ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                t = state[f"blocks.{i}.{module}.{part}"]
                theirs[f"transformer.h.{i}.{module}.{part}"] = t.T.contiguous() if part == "weight" and "ln" not in module else t
    return theirs


def to_gpt2_untransposed(state, config):
    return {k: state[ours] for k, ours in zip(to_gpt2(state, config), state)}


def to_gpt2_head_inside(state, config):  # wrong: lm_head put under transformer.
    return {("transformer." + k if k == "lm_head.weight" else k): v for k, v in to_gpt2(state, config).items()}


def to_gpt2_tied_head_dropped(state, config):  # wrong: the head left out
    return {k: v for k, v in to_gpt2(state, config).items() if k != "lm_head.weight"}


# --- exercise 1: parameters by group -----------------------------------------------------------------


def params(c):  # the notebook's
    V, T, C, L = c.vocab_size, c.n_positions, c.n_embd, c.n_layer
    H = c.n_inner or 4 * C
    return {"token embedding": V * C, "position embedding": T * C, "attention": L * (C * 3 * C + 3 * C + C * C + C),
            "MLP": L * (C * H + H + H * C + C), "LayerNorms": (2 * L + 1) * 2 * C,
            "untied head": 0 if c.tie_word_embeddings else V * C}


def params_counted(c):  # another correct form: transformers' model on the meta device, counted by name (tensors)
    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel(c)
    groups = dict.fromkeys(nb10.GROUPS, 0)
    for name, p in model.named_parameters():
        key = ("token embedding" if ".wte." in name else "position embedding" if ".wpe." in name
               else "untied head" if name.startswith("lm_head") else "attention" if ".attn." in name
               else "MLP" if ".mlp." in name else "LayerNorms")
        groups[key] += p.numel()
    return {k: torch.tensor(v) for k, v in groups.items()}


def params_head_always(c):  # wrong: the tied head counted again
    return params(c) | {"untied head": c.vocab_size * c.n_embd}


def params_width_4c(c):  # wrong: n_inner ignored
    C, L = c.n_embd, c.n_layer
    return params(c) | {"MLP": L * (8 * C * C + 5 * C)}


def params_no_ln_f(c):
    return params(c) | {"LayerNorms": 4 * c.n_layer * c.n_embd}


# --- exercise 2: greedy with transformers' cache ------------------------------------------------------


def greedy(model, prompt, n):  # the notebook's
    new = []
    with torch.no_grad():
        out = model(torch.tensor([prompt]))
        for i in range(n):
            new.append(int(out.logits[0, -1].argmax()))
            if i < n - 1:
                out = model(torch.tensor([new[-1:]]), cache=out.cache)
    return new


def greedy_old_names(model, prompt, n):  # another correct form: keyword input_ids, one forward too many, a tensor back
    ids, past, new = torch.tensor([prompt]), None, []
    for _ in range(n):
        out = model(input_ids=ids, cache=past, use_cache=True)
        past = out.cache
        ids = out.logits[:, -1:].argmax(-1)  # (1, 1)
        new.append(ids)
    model(input_ids=ids, cache=past)  # logits nobody uses
    return torch.cat(new, 1)[0]


def greedy_uncached(model, prompt, n):  # wrong: the whole sequence every time
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids]), use_cache=False).logits[0, -1].argmax()))
    return ids[len(prompt):]


def greedy_by_generate(model, prompt, n):  # wrong: the loop asked for is generate's
    with torch.no_grad():
        return model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, min_new_tokens=n)[0, len(prompt):]


def greedy_first_position(model, prompt, n):  # wrong: the first position's logits
    new = []
    out = model(torch.tensor([prompt]))
    for _ in range(n):
        new.append(int(out.logits[0, 0].argmax()))
        out = model(torch.tensor([new[-1:]]), cache=out.cache)
    return new


# --- exercise 3: GPT-NeoX's qkv ------------------------------------------------------------------------


def neox(t, n_head):  # the notebook's
    return t.reshape(3, n_head, -1, *t.shape[1:]).transpose(0, 1).reshape(t.shape)


def neox_by_heads(t, n_head):  # another correct form: q, k, v chunks cut per head and concatenated
    q, k, v = t.chunk(3)
    return torch.cat([part for h in range(n_head) for part in (q.chunk(n_head)[h], k.chunk(n_head)[h], v.chunk(n_head)[h])])


def neox_inverse(t, n_head):  # wrong: GPT-NeoX's order read as ours (the way back)
    return t.reshape(n_head, 3, -1, *t.shape[1:]).transpose(0, 1).reshape(t.shape)


def neox_rows_interleaved(t, n_head):  # wrong: single rows interleaved, not each head's block of rows
    q, k, v = t.chunk(3)
    return torch.stack([q, k, v], 1).reshape(t.shape)


# check -> (right answers, wrong answers, what echoing the inputs looks like)
CASES = {
    ex.check_gpt2_config: ([config_spelled_out, config_as_numbers],
                           [config_width_always_4c, config_always_tied, config_heads_and_layers_swapped, config_context_from_width,
                            config_rmsnorm,
                            lambda c: config_spelled_out(c).to_dict()],
                           lambda c: c),
    ex.check_gpt2_weights: ([to_ours, to_ours_by_name],
                            [to_ours_untransposed, to_ours_attn_proj_untransposed, to_ours_head_from_wte, to_ours_prefix_kept],
                            lambda state, config: state),
    ex.check_minigpt_to_gpt2: ([to_gpt2, to_gpt2_by_name],
                               [to_gpt2_untransposed, to_gpt2_head_inside, to_gpt2_tied_head_dropped],
                               lambda state, config: state),
    ex.check_gpt2_params: ([params, params_counted], [params_head_always, params_width_4c, params_no_ln_f,
                                                      lambda c: sum(params(c).values())],
                           lambda c: c),
    ex.check_greedy_cached: ([greedy, greedy_old_names], [greedy_uncached, greedy_by_generate, greedy_first_position,
                                                          lambda m, p, n: greedy(m, p, n)[:-1]],
                             lambda model, prompt, n: prompt),
    ex.check_neox_qkv: ([neox, neox_by_heads], [neox_inverse, neox_rows_interleaved], lambda t, n_head: t),
}

(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES)

# each step -> the package's piece that stands in for the learner's
STEPS = {ex.check_gpt2_config: nb10.gpt2_config, ex.check_gpt2_weights: nb10.gpt2_to_minigpt,
         ex.check_minigpt_to_gpt2: nb10.minigpt_to_gpt2}
test_the_packages_piece_passes, test_a_step_hands_on_yours_when_right_else_the_packages = step_tests(STEPS, CASES)


def test_checks_leave_the_global_rng_alone():
    assert_checks_leave_the_global_rng_alone(CASES)


def test_feedback_is_specific():
    message = ex.check_gpt2_config(config_context_from_width).message
    assert message.startswith("gpt2_config(GPT2Config()): expected {'vocab_size': 50257, 'block_size': 1024"), message
    assert "first difference at ['block_size']: expected 1024, got 768" in message
    message = ex.check_gpt2_config(config_heads_and_layers_swapped).message
    assert "gpt2_config: your code raised UserError: n_embd=1024 is not divisible by n_head=24" in message
    message = ex.check_gpt2_config(config_width_always_4c, hidden=True).message
    assert "gpt2_config(tiny GPT2Config(n_inner=100)): expected {'vocab_size': 257" in message
    assert "first difference at ['MLP width']: expected 100, got 128" in message
    message = ex.check_gpt2_config(lambda c: config_spelled_out(c).to_dict()).message
    assert "raised TypeError: return a GPTConfig (from mini_llm.model import GPTConfig), got dict" in message

    message = ex.check_gpt2_weights(to_ours_untransposed).message
    assert message.startswith("gpt2_to_minigpt(<GPT2LMHeadModel's state_dict, L=2, nh=2, C=32, T=32, V=257>, "
                              "<GPTConfig L=2, nh=2, C=32, T=32, V=257>): expected {'wte.weight': tensor(257, 32) ["), message
    assert "first difference in the shape of ['blocks.0.attn.c_attn.weight']: expected (96, 32), got (32, 96)" in message
    message = ex.check_gpt2_weights(to_ours_attn_proj_untransposed).message
    assert "first difference at ['blocks.0.attn.c_proj.weight'][0, 1]: expected" in message, message
    message = ex.check_gpt2_weights(to_ours_head_from_wte, hidden=True).message
    assert "untied head" in message and "first difference at ['lm_head.weight'][0, 0]" in message, message
    message = ex.check_minigpt_to_gpt2(to_gpt2_tied_head_dropped).message
    assert "first difference at ['lm_head.weight']: expected tensor(257, 32)" in message and "got no entry" in message

    message = ex.check_gpt2_params(params_head_always).message
    assert "GPT-2 parameters(GPT2Config()): expected {'token embedding': 38597376" in message
    assert "first difference at ['untied head']: expected 0, got 38597376" in message
    message = ex.check_greedy_cached(greedy_uncached).message
    assert "greedy with the cache(<GPT2LMHeadModel L=2 C=32 T=32>, [" in message and "from 6 calls fed 9 tokens, got" in message
    assert "from 6 calls fed 39 tokens" in message, message
    assert "from 0 calls fed 0 tokens" in ex.check_greedy_cached(greedy_by_generate).message
    message = ex.check_neox_qkv(neox_inverse).message
    assert message.startswith("GPT-NeoX qkv(tensor(12, 4)"), message
    assert "first difference at [2, 0]: expected 16.0, got 24.0" in message, message


def test_the_expected_values_are_transformers_own():
    """The package's mapping, which the checks compare with, agrees with transformers' models: the
    converted weights give transformers' logits (both ways), the parameter groups add up to the model's
    parameters, and greedy by definition is transformers' generate."""
    for i, sizes in enumerate([nb10.SMALL, *nb10.HIDDEN_WEIGHT_SIZES]):
        hf_model = nb10._gpt2_model(i, **sizes)
        config = nb10.gpt2_config(hf_model.config)
        model = MiniGPT(config).eval()
        model.load_state_dict(nb10.gpt2_to_minigpt(hf_model.state_dict(), config))
        idx = torch.randint(0, config.vocab_size, (2, min(9, config.block_size)), generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            assert torch.allclose(model(idx)[0], hf_model(idx).logits, rtol=1e-5, atol=1e-5)
        back = transformers.GPT2LMHeadModel(hf_model.config).eval()
        back.load_state_dict(nb10.minigpt_to_gpt2(model.state_dict(), config), strict=True)
        with torch.no_grad():
            assert torch.equal(back(idx).logits, hf_model(idx).logits)
        groups = nb10.parameter_groups(nb10._meta_model(config))
        assert sum(groups.values()) == sum(p.numel() for p in hf_model.parameters())
    assert sum(nb10.parameter_groups(nb10._meta_model(nb10.gpt2_config(transformers.GPT2Config()))).values()) == 124_439_808
    hf_model = nb10._gpt2_model(0, scale=3.0, **nb10.SMALL)
    hf_model.generation_config.eos_token_id = None  # the definition does not stop
    with torch.no_grad():
        generated = hf_model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=12, do_sample=False)[0, 3:].tolist()
    assert nb10._greedy_uncached(hf_model, [5, 6, 7], 12) == generated and len(set(generated)) > 1


# --- the notebook's step and exercise cells -------------------------------------------------------


def test_the_notebook_proves_its_equalities_and_checks_only_portable_output():
    assert_proofs_are_portable(NOTEBOOK, min_cells=9, min_trues=12)


def test_the_committed_outputs_say_which_gpt2_ran():
    from tests.course.check_contract import notebook_code_cells

    said = "".join(o.get("text", "") for c in notebook_code_cells(NOTEBOOK) for o in c.outputs)
    assert "this run uses: a small GPT-2-shaped model made here, random weights" in said
    assert "gpt2 in the course's model:" not in said  # no GPT-2 text that was not produced


(test_three_exercises_with_public_and_hidden_checks, test_student_copy_exercises_say_not_written_yet,
 test_every_check_is_used_in_the_notebook) = notebook_tests(NOTEBOOK, CASES, ex, {"torch": torch})
