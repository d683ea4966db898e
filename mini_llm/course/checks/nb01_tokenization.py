"""Checks of notebook 01 (tokenization). Steps: pair counts, merge, train, encode, decode.
Exercises: encoding by rank, stream decoding, unmerging."""

from mini_llm.bpe import encode_chunk, learn_merges, merge, pair_counts, token_bytes
from mini_llm.course.checks.harness import Result, as_ints, on_copies, run_cases, step

_VERSE = ("Shall I compare thee to a summer's day? Thou art more lovely and more temperate: "
          "Rough winds do shake the darling buds of May, and summer's lease hath all too short a date; "
          "Sometime too hot the eye of heaven shines, and often is his gold complexion dimm'd; "
          "And every fair from fair sometime declines, by chance or nature's changing course untrimm'd.\n")
_WIKI = {(97, 97): 256, (97, 98): 257, (256, 257): 258}  # the Wikipedia example's merges: aa, ab, then aa + ab


def _bpe(text: str, vocab_size: int, min_frequency: int = 2):
    from mini_llm.bpe import BPE

    bpe = BPE()
    bpe.train(text, vocab_size, min_frequency=min_frequency)
    return bpe


def _shuffled(merges: dict, seed: int) -> dict:
    """The same merges in another dict order: the rank is the new id, not the position."""
    import random

    items = list(merges.items())
    random.Random(seed).shuffle(items)
    return dict(items)


# --- the package's pieces, in the notebook's signatures ---------------------------------------


def bpe_train(ids, num_merges):
    """mini_llm.bpe's training on one sequence of ids: (merges in the order learned, the merged ids)."""
    merges, (merged,) = learn_merges([list(ids)], [1], num_merges, min_frequency=1)
    return merges, merged


def decode(ids, merges):
    """The text of ids under merges (mini_llm.bpe.token_bytes); bytes that are no character become �."""
    vocab = token_bytes(merges)
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


# --- steps --------------------------------------------------------------------------------------


def check_pair_counts(fn, hidden: bool = False) -> Result:
    """Step: fn(ids) -> {(a, b): count} of adjacent pairs."""
    cases = [(([1, 2, 3, 1, 2],), {(1, 2): 2, (2, 3): 1, (3, 1): 1}),
             (([97, 97, 97],), {(97, 97): 2}),
             (([5],), {})]
    hidden_cases = [(([],), {}), (([7, 7, 7, 7, 8, 7, 7],), {(7, 7): 4, (7, 8): 1, (8, 7): 1}),
                    ((list(b"hello hello"),), {(104, 101): 2, (101, 108): 2, (108, 108): 2, (108, 111): 2,
                                               (111, 32): 1, (32, 104): 1})]
    return step("pair_counts", fn, pair_counts, run_cases(
        "pair_counts", on_copies(fn), cases, "walk over neighbours (position i and i + 1); overlapping pairs "
        "count, so 'aaa' holds (a, a) twice.", lambda g, w: dict(g) == w, hidden_cases=hidden_cases, hidden=hidden))


def check_merge(fn, hidden: bool = False) -> Result:
    """Step: fn(ids, pair, new_id) -> ids with every occurrence of pair (left to right) replaced."""
    cases = [(([1, 2, 3, 1, 2], (1, 2), 99), [99, 3, 99]),
             (([97, 97, 97], (97, 97), 256), [256, 97]),
             (([1, 3, 1], (1, 2), 7), [1, 3, 1])]
    hidden_cases = [(([], (1, 2), 5), []), (([2, 2, 2, 2], (2, 2), 9), [9, 9]), (([1, 2], (2, 1), 3), [1, 2]),
                    (([4, 1, 2, 1, 2, 2], (1, 2), 300), [4, 300, 300, 2])]
    return step("merge", fn, merge, run_cases(
        "merge", on_copies(fn), cases, "scan left to right; after a match jump past both tokens, so 'aaa' "
        "becomes (aa) a, not two overlapping merges.", lambda g, w: as_ints(g) == w,
        hidden_cases=hidden_cases, hidden=hidden))


def check_bpe_train(fn, hidden: bool = False) -> Result:
    """Step: fn(ids, num_merges) -> (merges {(a, b): new_id}, the ids with every merge applied)."""
    def case(text, num_merges):
        ids = list(text.encode("utf-8"))
        return (ids, num_merges), bpe_train(ids, num_merges)

    cases = [case("aaabdaaabac", 3), case("abcd abcd", 2), case("hello hello hello", 4)]
    hidden_cases = [case("", 2), case("x", 1), case("aaaa", 3), case("Thou art more lovely and more temperate", 6),
                    case(_VERSE, 30), case("déjà vu 👋 déjà", 5)]
    return step("train", fn, bpe_train, run_cases(
        "train", on_copies(fn), cases, "each round: count the pairs of the current ids, take the most frequent "
        "(ties: the smallest pair), record it with the next id (256, 257, ...) and merge it before the next "
        "round; stop early when no pair is left. Return (merges, ids).",
        lambda g, w: len(g) == 2 and dict(g[0]) == w[0] and as_ints(g[1]) == w[1],
        hidden_cases=hidden_cases, hidden=hidden))


def check_encode(fn, hidden: bool = False) -> Result:
    """Step: fn(text, merges) -> ids: the UTF-8 bytes with every merge applied, in the order learned
    (here the dict lists the merges in that order, as train returns them)."""
    verse = _bpe(_VERSE, 330).merges

    def case(text, merges):
        return (text, dict(merges)), encode_chunk(text, merges)

    cases = [case("aaabdaaabac", _WIKI), case("abracadabra", _WIKI), case(" the summer", verse)]
    hidden_cases = [case("", _WIKI), case("x", verse), case("aaaaaaa", _WIKI), case("Thou art more lovely, thee!", verse),
                    case("fair from fair: déjà vu 👋", verse)]
    return step("encode", fn, encode_chunk, run_cases(
        "encode", on_copies(fn), cases, "start from the text's UTF-8 bytes, then apply each merge with `merge`, "
        "in the order learned (a merge can use a token that an earlier one made).",
        lambda g, w: as_ints(g) == w, hidden_cases=hidden_cases, hidden=hidden))


def check_decode(fn, hidden: bool = False) -> Result:
    """Step: fn(ids, merges) -> the text: every token's bytes joined, then decoded as UTF-8 (with
    errors="replace": bytes that form no character become �)."""
    verse = _bpe(_VERSE + "déjà 👋 Ωж", 330)

    def case(ids, merges):
        return (list(ids), dict(merges)), decode(ids, merges)

    cases = [case([258, 100, 258, 97, 99], _WIKI), case([258, 32, 240, 159, 145, 139], _WIKI),
             case(verse.encode("summer's day"), verse.merges), case([258, 240, 159], _WIKI)]
    hidden_cases = [case([], _WIKI), case([240, 159, 145], _WIKI), case([195, 169, 257], _WIKI),
                    case(verse.encode("Thou art déjà 👋 Ωж"), verse.merges), case([256, 257, 258], _WIKI)]
    return step("decode", fn, decode, run_cases(
        "decode", on_copies(fn), cases, "build {id: bytes} once (the 256 bytes, then each merge as the bytes of "
        "its two halves, in the order learned), join the bytes of all the tokens, and decode the whole at once "
        "with errors=\"replace\": one character's bytes can sit in two tokens.",
        lambda g, w: isinstance(g, str) and g == w, hidden_cases=hidden_cases, hidden=hidden))


# --- exercises ----------------------------------------------------------------------------------


def check_bpe_encode(fn, hidden: bool = False) -> Result:
    """fn(text, merges) -> ids: the UTF-8 bytes of text with the merges applied in rank order
    (the rank of a merge is its new id; the dict may list them in any order)."""
    verse = _bpe(_VERSE, 330).merges

    def case(text, merges, seed):
        return ((text, _shuffled(merges, seed)), encode_chunk(text, merges))

    cases = [(("aaabdaaabac", dict(reversed(list(_WIKI.items())))), [258, 100, 258, 97, 99]),
             case("abracadabra", _WIKI, 1), case(" the summer", verse, 2)]
    hidden_cases = [case("", _WIKI, 3), case("x", verse, 4), case("Thou art more lovely, thee!", verse, 5),
                    case("fair from fair: déjà vu 👋", verse, 6), case("aaaaaaa", _WIKI, 7)]
    return run_cases("BPE encode", on_copies(fn), cases, "start from the text's UTF-8 bytes; among the pairs present, "
                  "merge the one with the lowest new id first (it was learned first), and stop when no pair "
                  "present is in merges. The dict's order is not the rank.",
                  lambda g, w: as_ints(g) == w, hidden_cases=hidden_cases, hidden=hidden)


def check_stream_decode(fn, hidden: bool = False) -> Result:
    """fn(ids, vocab) -> one string per id: the characters completed by that token ("" while a
    multi-byte character is still incomplete)."""
    byte_vocab = {i: bytes([i]) for i in range(256)}
    verse = _bpe(_VERSE + "Ωж 👋 déjà ", 330).vocab

    def case(text, vocab):
        inverse = {b: i for i, b in vocab.items()}
        ids, data = [], text.encode("utf-8")
        while data:  # greedy longest match: any split into vocabulary pieces is a fine input
            n = max(n for n in range(1, len(data) + 1) if data[:n] in inverse)
            ids.append(inverse[data[:n]])
            data = data[n:]
        pieces, buffer = [], b""
        for i in ids:
            buffer += vocab[i]
            for cut in range(len(buffer), -1, -1):
                try:
                    done = buffer[:cut].decode("utf-8")
                    break
                except UnicodeDecodeError:
                    continue
            pieces.append(done)
            buffer = buffer[cut:]
        return ((ids, vocab), pieces)

    cases = [case("Ωж", byte_vocab), case("hi 👋!", byte_vocab), case("Thou art déjà", verse)]
    hidden_cases = [case("", byte_vocab), case("abc", byte_vocab), case("日本語のテキスト", byte_vocab),
                    case("Shall I compare thee 👋 Ωж", verse), case("é👋é", verse)]
    return run_cases("stream decode", on_copies(fn), cases, "keep the bytes that do not yet form whole characters in "
                  "a buffer; after each token, hand out the longest prefix of the buffer that decodes as UTF-8 "
                  "and keep the rest for the next token.",
                  lambda g, w: [str(p) for p in g] == w and all(isinstance(p, str) for p in g),
                  hidden_cases=hidden_cases, hidden=hidden)


def check_unmerge(fn, hidden: bool = False) -> Result:
    """fn(ids, merges) -> the byte values (0..255) that the tokens stand for, using only merges."""
    verse = _bpe(_VERSE, 330)

    def case(text, bpe, seed):
        ids = bpe.encode(text)
        return ((ids, _shuffled(bpe.merges, seed)), list(text.encode("utf-8")))

    cases = [(([258, 100, 258, 97, 99], _WIKI), list(b"aaabdaaabac")), (([258], _WIKI), list(b"aaab")),
             case("summer's day", verse, 1)]
    hidden_cases = [(([], _WIKI), []), (([97, 257, 256], _WIKI), list(b"aabaa")),
                    case("Rough winds do shake the darling buds of May", verse, 2), case("fair déjà 👋", verse, 3)]
    return run_cases("unmerge", on_copies(fn), cases, "a token below 256 is a byte; any other token is the pair it was "
                  "merged from, and each half may itself be a merged token: invert the merges dict and expand "
                  "until only bytes are left.",
                  lambda g, w: as_ints(g) == w, hidden_cases=hidden_cases, hidden=hidden)

