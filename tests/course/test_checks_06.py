"""The checks of notebook 06: right answers (in every standard form) pass, public and hidden cases;
wrong ones fail naming the input; echoing the inputs fails; unwritten says so; changing the inputs
in place cannot fool them; each step hands on yours or the package's piece (a sampler in vocabulary
order passes as well as one on sorted candidates). Then the notebook's step and exercise cells."""

import re

import torch
import torch.nn.functional as F

from mini_llm.course import checks as ex
from mini_llm.course.checks import nb06_sampling_and_chat as nb06
from mini_llm.model import KVCache
from tests.course.check_contract import (
    assert_checks_leave_the_global_rng_alone,
    assert_proofs_are_portable,
    contract_tests,
    notebook_code_cells,
    notebook_tests,
    step_tests,
)

# --- the steps: temperature, top-k, nucleus, the draw, the two loops, streaming -------------------


def probs_at_temperature(logits, temperature):  # the notebook's
    if temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.size(-1)).float()
    return torch.softmax(logits / temperature, dim=-1)


def probs_logsumexp(logits, temperature):  # another correct form
    if temperature == 0:
        return (logits == logits.max()).float()
    scaled = logits / temperature
    return torch.exp(scaled - torch.logsumexp(scaled, dim=-1, keepdim=True))


def top_k_filter(logits, k):  # the notebook's
    kth = torch.topk(logits, min(k, logits.size(-1))).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_k_sort(logits, k):  # another correct form: sort, keep the first k, scatter back
    order = logits.argsort(descending=True)
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep[order[:k]] = True
    return torch.where(keep, logits, torch.full_like(logits, float("-inf")))


def nucleus(probs, top_p):  # the notebook's
    before = probs.cumsum(dim=-1) - probs
    drop = before >= top_p
    drop[..., 0] = False
    kept = probs.masked_fill(drop, 0.0)
    return kept / kept.sum(dim=-1, keepdim=True)


def nucleus_rows(probs, top_p):  # another correct form: row by row in Python
    rows = probs.reshape(-1, probs.size(-1)).tolist()
    out = []
    for row in rows:
        kept, total = [], 0.0
        for q in row:
            kept.append(q if total < top_p or not kept else 0.0)
            total += q
        out.append([q / sum(kept) for q in kept])
    return torch.tensor(out).reshape(probs.shape)


def nucleus_not_renormalised(probs, top_p):
    before = probs.cumsum(dim=-1) - probs
    return probs.masked_fill(before >= top_p, 0.0)


def nucleus_inclusive(probs, top_p):  # drops the token that crosses p: one too few
    drop = probs.cumsum(dim=-1) > top_p
    drop[..., 0] = False
    kept = probs.masked_fill(drop, 0.0)
    return kept / kept.sum(dim=-1, keepdim=True)


def nucleus_one_sum(probs, top_p):  # divides a batch by one sum over all its rows
    before = probs.cumsum(dim=-1) - probs
    kept = probs.masked_fill(before >= top_p, 0.0)
    kept[..., 0] = probs[..., 0]
    return kept / kept.sum() * (kept.numel() // kept.size(-1))


def sample_sorted(logits, temperature, top_k, top_p, generator):  # the notebook's: sorted candidates
    logits = logits.float()
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is None and top_p is None:
        return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
    values, ids = torch.topk(logits, min(top_k or logits.size(-1), logits.size(-1)))
    probs = torch.softmax(values, -1)
    if top_p is not None:
        probs = nucleus(probs, top_p)
    return int(ids[torch.multinomial(probs, 1, generator=generator)])


def sample_vocabulary_order(logits, temperature, top_k, top_p, generator, global_rng=False):
    """Another correct form: every filter in vocabulary order, one draw over all V."""
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        probs, order = torch.softmax(logits, -1).sort(descending=True)
        drop = probs.cumsum(-1) - probs >= top_p
        drop[0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = torch.softmax(logits, -1)
    return int(torch.multinomial(probs, 1, generator=None if global_rng else generator))


def sample_index_not_id(logits, temperature, top_k, top_p, generator):  # the index into the candidates
    values, _ = torch.topk(logits / max(temperature, 1e-8), min(top_k or logits.size(-1), logits.size(-1)))
    return int(torch.multinomial(torch.softmax(values, -1), 1, generator=generator))


def sample_without_temperature(logits, temperature, top_k, top_p, generator):
    return sample_vocabulary_order(logits, 1.0 if temperature else 0.0, top_k, top_p, generator)


def sample_without_top_k(logits, temperature, top_k, top_p, generator):
    return sample_vocabulary_order(logits, temperature, None, top_p, generator)


def sample_global_rng(logits, temperature, top_k, top_p, generator):
    return sample_vocabulary_order(logits, temperature, top_k, top_p, generator, global_rng=True)


@torch.no_grad()
def generate_uncached(model, ids, max_new_tokens, sample, crop=True, last=True, prompt_too=False):  # the notebook's
    context = list(ids)
    for _ in range(max_new_tokens):
        window = torch.tensor([context[-model.config.block_size:] if crop else context])
        logits, _ = model(window, last_only=True)
        context.append(sample(logits[0, -1] if last else model(window)[0][0, 0]))
    return context if prompt_too else context[len(ids):]


@torch.no_grad()
def generate_uncached_tensor(model, ids, max_new_tokens, sample):  # another correct form: nanoGPT's tensor context
    idx = torch.tensor([ids])
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -model.config.block_size:], last_only=True)
        idx = torch.cat([idx, torch.tensor([[sample(logits[0, -1])]])], dim=1)
    return idx[0, len(ids):].tolist()


@torch.no_grad()
def generate_cached(model, ids, max_new_tokens, sample, keep=None, refill=True):  # the notebook's
    T = model.config.block_size
    context, cache = list(ids), KVCache()

    def prefill(tokens):
        cache.reset()
        return model(torch.tensor([tokens]), cache=cache, last_only=True)[0][0, -1]

    logits = prefill(context[-T:])
    for _ in range(max_new_tokens):
        token = sample(logits)
        context.append(token)
        if cache.pos < T or not refill:
            logits = model(torch.tensor([[token]]), cache=cache, last_only=True)[0][0, -1]
        else:
            logits = prefill(context[-(keep or T // 2):])
    return context[len(ids):]


@torch.no_grad()
def generate_cached_new_cache(model, ids, max_new_tokens, sample):
    """Another correct form: a new KVCache at each prefill, a while loop, a tensor of new ids."""
    T, context, new = model.config.block_size, list(ids), []

    def prefill(tokens):
        cache = KVCache()
        return cache, model(torch.tensor([tokens]), cache=cache, last_only=True)[0][0, -1]

    cache, logits = prefill(context[-T:])
    while len(new) < max_new_tokens:
        token = sample(logits)
        new.append(token)
        context.append(token)
        if cache.pos == T:
            cache, logits = prefill(context[-(T // 2):])
        else:
            logits = model(torch.tensor([[token]]), cache=cache, last_only=True)[0][0, -1]
    return torch.tensor(new)


def stream_pieces(tokenizer, ids):  # the notebook's
    shown = 0
    for n in range(1, len(ids) + 1):
        reply = tokenizer.decode(ids[:n])
        safe = len(reply)
        while safe > shown and reply[safe - 1] == "\ufffd":
            safe -= 1
        if safe > shown:
            yield reply[shown:safe]
            shown = safe
    reply = tokenizer.decode(ids)
    if len(reply) > shown:
        yield reply[shown:]


def stream_pieces_rstrip(tokenizer, ids, flush=True, empty=False):  # another correct form: rstrip, a list
    pieces, shown = [], ""
    for n in range(1, len(ids) + 1):
        safe = tokenizer.decode(ids[:n]).rstrip("\ufffd")
        if len(safe) > len(shown) or empty:
            pieces.append(safe[len(shown):])
            shown = safe if len(safe) > len(shown) else shown
    rest = tokenizer.decode(ids)[len(shown):]
    return pieces + ([rest] if rest and flush else [])


# check -> (right answers, wrong answers, what echoing the inputs looks like)
STEP_CASES = {
    ex.check_temperature: ([probs_at_temperature, probs_logsumexp],
                           [lambda l, t: torch.softmax(l * t, -1) if t else probs_at_temperature(l, t),
                            lambda l, t: torch.softmax(l, -1), lambda l, t: torch.softmax(l / max(t, 1.0), -1)],
                           lambda l, t: l),
    ex.check_top_k: ([top_k_filter, top_k_sort],
                     [lambda l, k: top_k_filter(l, k + 1), lambda l, k: -top_k_filter(-l, k),
                      lambda l, k: torch.where(l >= torch.topk(l, min(k, l.numel())).values[-1], l, torch.zeros_like(l))],
                     lambda l, k: l),
    ex.check_nucleus: ([nucleus, nucleus_rows], [nucleus_not_renormalised, nucleus_inclusive, nucleus_one_sum],
                       lambda probs, p: probs),
    ex.check_sample_next: ([sample_sorted, sample_vocabulary_order],
                           [sample_index_not_id, sample_without_temperature, sample_without_top_k, sample_global_rng,
                            lambda l, t, k, p, g: int(l.argmax())],
                           lambda l, t, k, p, g: l),
    ex.check_generate_uncached: ([generate_uncached, generate_uncached_tensor],
                                 [lambda m, ids, n, s: generate_uncached(m, ids, n, s, crop=False),
                                  lambda m, ids, n, s: generate_uncached(m, ids, n, s, last=False),
                                  lambda m, ids, n, s: generate_uncached(m, ids, n, s, prompt_too=True)],
                                 lambda m, ids, n, s: ids),
    ex.check_generate_cached: ([generate_cached, generate_cached_new_cache],
                               [lambda m, ids, n, s: generate_cached(m, ids, n, s, keep=m.config.block_size - 1),
                                lambda m, ids, n, s: generate_cached(m, ids, n, s, refill=False),
                                generate_uncached],
                               lambda m, ids, n, s: ids),
    ex.check_stream_pieces: ([stream_pieces, stream_pieces_rstrip],
                             [lambda tok, ids: [tok.decode([i]) for i in ids],
                              lambda tok, ids: stream_pieces_rstrip(tok, ids, flush=False),
                              lambda tok, ids: stream_pieces_rstrip(tok, ids, empty=True)],
                             lambda tok, ids: ids),
}

# --- top_p: the nucleus, in vocabulary order, for any batch shape --------------------------------


def top_p_scatter(logits, p):
    probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
    drop_sorted = probs.cumsum(dim=-1) - probs >= p          # the tokens before already reach p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)       # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def top_p_hf(logits, p):  # Hugging Face's TopPLogitsWarper: ascending sort, drop the tail below 1 - p
    sorted_logits, order = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - p)
    remove[..., -1:] = False
    remove = remove.scatter(-1, order, remove)
    return logits.masked_fill(remove, -float("inf"))


def top_p_rows(logits, p):  # row by row in Python, returning nested lists, editing a copy in place
    flat = logits.reshape(-1, logits.size(-1)).tolist()
    for row in flat:
        probs = torch.softmax(torch.tensor(row), 0).tolist()
        total = 0.0
        for i in sorted(range(len(row)), key=lambda j: -probs[j]):
            if total >= p:
                row[i] = float("-inf")
            total += probs[i]
    return torch.tensor(flat).reshape(logits.shape).tolist()


def top_p_in_place(logits, p):  # correct output, and changes the caller's tensor too
    logits.copy_(top_p_scatter(logits, p))
    return logits


def top_p_cum_below(logits, p):  # keeps only tokens whose running total stays below p: one too few
    probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
    drop_sorted = probs.cumsum(dim=-1) > p
    drop_sorted[..., 0] = False
    return logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))


def top_p_sorted_order(logits, p):  # forgets to scatter back: the mask lands on the wrong tokens
    probs, _ = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
    drop = probs.cumsum(dim=-1) - probs >= p
    return logits.masked_fill(drop, float("-inf"))


def top_p_no_first(logits, p):  # the most likely token may be dropped when p is tiny
    probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
    drop = probs.cumsum(dim=-1) > p
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def top_p_flat_only(logits, p):  # right for one row, wrong across a batch (sorts everything together)
    flat = logits.reshape(-1)
    return top_p_scatter(flat, p).reshape(logits.shape)


def top_p_probabilities(logits, p):  # returns the renormalised probabilities, not logits
    kept = top_p_scatter(logits, p)
    return torch.softmax(kept, dim=-1)


# --- repetition_penalty ----------------------------------------------------------------------------


def penalty_loop(logits, context_ids, penalty):
    out = logits.clone()
    for i in set(context_ids):
        out[i] = out[i] / penalty if out[i] > 0 else out[i] * penalty
    return out


def penalty_vectorised(logits, context_ids, penalty):  # Hugging Face's gather / where / scatter
    ids = torch.tensor(context_ids, dtype=torch.long)
    score = logits.gather(0, ids)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(0, ids, score)


def penalty_in_place(logits, context_ids, penalty):
    for i in set(context_ids):
        logits[i] = logits[i] / penalty if logits[i] > 0 else logits[i] * penalty
    return logits.tolist()


def penalty_per_occurrence(logits, context_ids, penalty):
    out = logits.clone()
    for i in context_ids:
        out[i] = out[i] / penalty if out[i] > 0 else out[i] * penalty
    return out


def penalty_divide_all(logits, context_ids, penalty):  # a negative logit divided moves up
    out = logits.clone()
    for i in set(context_ids):
        out[i] = out[i] / penalty
    return out


def penalty_everywhere(logits, context_ids, penalty):
    return torch.where(logits > 0, logits / penalty, logits * penalty)


# --- stop_stream ---------------------------------------------------------------------------------


def stop_stream(texts, stops, flush=True, whole_characters=True):
    pieces, shown = [], 0
    for text in texts:
        hits = [text.find(s) for s in stops if s in text]
        if hits:
            if min(hits) > shown:
                pieces.append(text[shown : min(hits)])
            return pieces
        safe = len(text)
        for s in stops:
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    safe = min(safe, len(text) - n)
                    break
        while whole_characters and safe > shown and text[safe - 1] == "\ufffd":
            safe -= 1
        if safe > shown:
            pieces.append(text[shown:safe])
            shown = safe
    if flush and texts and len(texts[-1]) > shown:
        pieces.append(texts[-1][shown:])
    return pieces


def stop_stream_generator(texts, stops):  # another form: yield the pieces, a tuple of stops is fine
    yield from stop_stream(list(texts), list(stops))


def stream_ignoring_stops(texts, stops):  # prints the stop string's first characters early
    return stop_stream(texts, [])


def stream_printing_the_stop(texts, stops):
    pieces = stop_stream(texts, [])
    text = "".join(pieces)
    hits = [text.find(s) for s in stops if s in text]
    if not hits:
        return pieces
    end = min(hits) + len(stops[0])
    return [text[:end]]


def stream_without_flush(texts, stops):  # a held-back "\n" that was no stop never comes out
    return stop_stream(texts, stops, flush=False)


def stream_broken_characters(texts, stops):  # prints "\ufffd" as soon as it appears
    return stop_stream(texts, stops, whole_characters=False)


# check -> (right answers, wrong answers, what echoing the inputs looks like)
CASES = {
    ex.check_top_p: ([top_p_scatter, top_p_hf, top_p_rows, top_p_in_place],
                     [top_p_cum_below, top_p_sorted_order, top_p_no_first, top_p_flat_only, top_p_probabilities],
                     lambda logits, p: logits),
    ex.check_repetition_penalty: ([penalty_loop, penalty_vectorised, penalty_in_place],
                                  [penalty_per_occurrence, penalty_divide_all, penalty_everywhere],
                                  lambda logits, context_ids, penalty: logits),
    ex.check_stop_stream: ([stop_stream, stop_stream_generator],
                           [stream_ignoring_stops, stream_printing_the_stop, stream_without_flush,
                            stream_broken_characters],
                           lambda texts, stops: texts),
}


CASES.update(STEP_CASES)

(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES)

# each step -> the package's piece that stands in for the learner's
STEPS = {ex.check_temperature: nb06.probs_at_temperature, ex.check_top_k: nb06.top_k_filter, ex.check_nucleus: nb06.nucleus,
         ex.check_sample_next: nb06.sample_next, ex.check_generate_uncached: nb06.generate_uncached,
         ex.check_generate_cached: nb06.generate_cached, ex.check_stream_pieces: nb06.stream_pieces}
test_the_packages_piece_passes, test_a_step_hands_on_yours_when_right_else_the_packages = step_tests(STEPS, CASES)


def test_the_checks_leave_the_global_rng_and_the_threads_alone():
    threads = torch.get_num_threads()
    assert_checks_leave_the_global_rng_alone(STEP_CASES)
    assert not ex.check_sample_next(sample_global_rng) and torch.get_num_threads() == threads


def test_a_sampler_in_vocabulary_order_passes_but_draws_other_tokens():
    """Item 3 of issue 21: the draw is checked by its distribution, so the vocabulary-order sampler
    passes, though from the same seed it draws other tokens than the package's sorted candidates."""
    assert ex.check_sample_next(sample_vocabulary_order, hidden=True)
    logits = torch.tensor([2.0, 0.5, 1.5, -1.0, 1.0, 0.0, 2.5, -0.5])
    draws = {fn: [fn(logits, 0.8, 3, None, g) for g in [torch.Generator().manual_seed(0)] for _ in range(50)]
             for fn in (sample_vocabulary_order, nb06.sample_next)}
    assert draws[sample_vocabulary_order] != draws[nb06.sample_next]


def test_step_feedback_names_the_difference():
    message = ex.check_sample_next(sample_index_not_id).message
    assert message.startswith("sample_next([2.0, 0.5, 1.5, -1.0, 1.0, 0.0, 2.5, -0.5], 1.0, None, None): expected draws"), message
    assert "got token 6 drawn in 2.1% of 2000 draws, its probability is 40.1%" in message
    message = ex.check_sample_next(sample_without_top_k).message
    assert "0.8, 3, None): expected" in message and "though its probability is 0" in message, message
    assert "other draws from the same seed" in ex.check_sample_next(sample_global_rng).message
    message = ex.check_nucleus(nucleus_not_renormalised).message
    assert "nucleus([0.5, 0.25, 0.125, 0.125], 0.3): expected [1.0, 0.0, 0.0, 0.0], got [0.5, 0.0, 0.0, 0.0]" in message, message
    message = ex.check_generate_cached(CASES[ex.check_generate_cached][1][0]).message
    assert "generate_cached(<MiniGPT block_size=16; prompt 13, 28 new, seed 2>)" in message, message
    assert "first difference at [" in message
    message = ex.check_stream_pieces(CASES[ex.check_stream_pieces][1][0]).message
    assert "stream_pieces(<byte-level tokenizer>, [206, 169, 208, 182" in message and "first difference at [0]" in message


def test_mutating_the_inputs_cannot_fool_a_check():
    """A function that edits the caller's tensor is graded on its output, against expected values
    computed before the call; the cases stay as they were for the next call."""
    for check, wrong in [(ex.check_top_p, lambda logits, p: logits.fill_(float("-inf"))),
                         (ex.check_repetition_penalty, lambda logits, ids, penalty: logits.mul_(0.0))]:
        assert not check(wrong, hidden=True)
    assert ex.check_top_p(top_p_in_place, hidden=True) and ex.check_repetition_penalty(penalty_in_place, hidden=True)


def test_hidden_cases_are_different_inputs():
    """Answers that memorise the public cases pass them and fail the hidden ones."""
    for check, right in [(ex.check_top_p, top_p_scatter), (ex.check_repetition_penalty, penalty_loop),
                         (ex.check_stop_stream, stop_stream)]:
        seen = {}

        def recorder(*args, right=right, seen=seen):
            seen[repr(args)] = right(*args)
            return seen[repr(args)]

        assert check(recorder)
        first = next(iter(seen.values()))
        memorised = lambda *args, seen=seen, first=first: seen.get(repr(args), first)  # noqa: E731
        assert check(memorised)
        assert not check(memorised, hidden=True)


def test_feedback_is_specific():
    result = ex.check_top_p(top_p_cum_below)
    assert "top-p([1.0, 3.0, 2.0, 0.5, 4.0], 0.9): expected [-inf, 3.0, 2.0, -inf, 4.0]" in result.message, result.message
    result = ex.check_top_p(top_p_sorted_order)
    assert "expected [-inf, 3.0, 2.0, -inf, 4.0], got [1.0, 3.0, 2.0, -inf, -inf]" in result.message, result.message
    result = ex.check_top_p(top_p_flat_only)
    assert "[[0.0, 2.5, -1.0, 1.0], [3.0, 2.75, 2.5, -4.0]]" in result.message and "expected" in result.message
    result = ex.check_repetition_penalty(penalty_per_occurrence)
    assert "repetition penalty([2.0, -1.0, 0.5, 3.0, -2.0], [3, 3, 1, 3], 2.0): expected [2.0, -2.0, 0.5, 1.5, -2.0]" \
        in result.message, result.message
    result = ex.check_stop_stream(stream_ignoring_stops)
    assert "expected ['Ay', ', my', ' lord.'], got ['Ay', ', my', ' lord.', '\\n', '\\n', 'HORATIO']" in result.message, \
        result.message
    result = ex.check_stop_stream(stream_broken_characters)
    assert "expected ['Ω', 'ж', '!'], got ['\ufffd'" in result.message, result.message


def test_stop_stream_expects_what_the_package_streams():
    """The expected pieces come from generate.stream itself: a held-back start of a stop string
    that turned out to be no stop is printed at the end, and a stop at the very start prints nothing."""
    assert ex.check_stop_stream(stop_stream, hidden=True)
    assert stop_stream(["Go", "Go\n", "Go\nnow", "Go\nnow\n"], ["\n\n"]) == ["Go", "\nnow", "\n"]
    assert stop_stream(["\n", "\n\n"], ["\n\n"]) == []


# --- the exercise cells of notebook 06 ------------------------------------------------------------




def test_the_notebook_builds_before_it_imports_and_checks_its_pieces():
    sources = [c.source for c in notebook_code_cells("06_sampling_and_chat")]
    text = "".join(sources)
    for check in STEPS:  # the pieces the learner builds, checked in place
        assert check.__name__ + "(" in text, check.__name__
    first_package_sampler = next(i for i, s in enumerate(sources)
                                 if re.search(r"^from mini_llm\.generate import .*\bsample_logits\b", s, re.M))
    first_own_sampler = next(i for i, s in enumerate(sources) if "def sample_next(" in s)
    assert first_own_sampler < first_package_sampler
    assert "sampling_playground(model, tok)" in text and "chat_panel(model, tok)" in text


def test_the_notebook_proves_its_equalities_and_checks_only_portable_output():
    assert_proofs_are_portable("06_sampling_and_chat", 8, 8)


(test_three_exercises_with_public_and_hidden_checks, test_student_copy_exercises_say_not_written_yet,
 test_every_check_is_used_in_the_notebook) = notebook_tests("06_sampling_and_chat", CASES, ex, {"torch": torch})


def test_the_notebook_steps_pass_their_checks():
    """The step cells run in order (with the cells they build on): each passes its proof, and a
    proof's output says so."""
    from mini_llm.course.checks.nb06_sampling_and_chat import Bytes

    scope = {"torch": torch, "KVCache": KVCache}
    exec("def top_k_candidates(logits, k):\n    values, ids = torch.topk(logits, min(k, logits.size(-1)))\n"
         "    return ids, torch.softmax(values, dim=-1)", scope)
    steps = 0
    for cell in notebook_code_cells("06_sampling_and_chat"):
        if "### BEGIN SOLUTION" in cell.source and "proof" not in cell.source and "check_" not in cell.source:
            exec(cell.source, scope)
        elif "proof = check_" in cell.source:
            check, name = re.search(r"^proof = (check_\w+)\((\w+)\)$", cell.source, re.M).groups()
            result = getattr(ex, check)(scope[name], hidden=True)
            assert result and result.piece is scope[name], result.message
            assert "The rest of this notebook uses yours." in "".join(o.get("text", "") for o in cell.outputs)
            steps += 1
    assert steps == 7 and list(scope["stream_pieces"](Bytes(), list("Ω".encode()))) == ["Ω"]
