"""The exercise checks of notebook 06: right answers (in every standard form) pass, public and
hidden cases; wrong ones fail naming the input; echoing the inputs fails; unwritten says so;
changing the inputs in place cannot fool them. Then the notebook's exercise cells."""

import re

import torch

from mini_llm.course import checks as ex
from tests.course.check_contract import (
    assert_proofs_are_portable,
    contract_tests,
    notebook_code_cells,
    notebook_tests,
)

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


(test_right_answers_pass_public_and_hidden, test_wrong_answers_fail_naming_the_input, test_echoing_the_inputs_fails,
 test_not_written_yet) = contract_tests(CASES)


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
    for check in (ex.check_temperature, ex.check_top_k):  # the pieces the learner builds, checked in place
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
