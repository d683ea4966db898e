"""Checks of notebook 01 (tokenization): pair counts, merges, encoding by rank, stream decoding, unmerging."""

from mini_llm.course.checks.harness import Result, as_ints, on_copies, run_cases

_VERSE = ("Shall I compare thee to a summer's day? Thou art more lovely and more temperate: "
          "Rough winds do shake the darling buds of May, and summer's lease hath all too short a date; "
          "Sometime too hot the eye of heaven shines, and often is his gold complexion dimm'd; "
          "And every fair from fair sometime declines, by chance or nature's changing course untrimm'd.\n")


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


def check_pair_counts(fn, hidden: bool = False) -> Result:
    """fn(ids) -> {(a, b): count} of adjacent pairs."""
    cases = [(([1, 2, 3, 1, 2],), {(1, 2): 2, (2, 3): 1, (3, 1): 1}),
             (([97, 97, 97],), {(97, 97): 2}),
             (([5],), {})]
    hidden_cases = [(([],), {}), (([7, 7, 7, 7, 8, 7, 7],), {(7, 7): 4, (7, 8): 1, (8, 7): 1}),
                    ((list(b"hello hello"),), {(104, 101): 2, (101, 108): 2, (108, 108): 2, (108, 111): 2,
                                               (111, 32): 1, (32, 104): 1})]
    return run_cases("pair counts", on_copies(fn), cases, "walk over neighbours (position i and i + 1); "
                  "overlapping pairs count, so 'aaa' holds (a, a) twice.",
                  lambda g, w: dict(g) == w, hidden_cases=hidden_cases, hidden=hidden)


def check_merge(fn, hidden: bool = False) -> Result:
    """fn(ids, pair, new_id) -> ids with every occurrence of pair (left to right) replaced."""
    cases = [(([1, 2, 3, 1, 2], (1, 2), 99), [99, 3, 99]),
             (([97, 97, 97], (97, 97), 256), [256, 97]),
             (([1, 3, 1], (1, 2), 7), [1, 3, 1])]
    hidden_cases = [(([], (1, 2), 5), []), (([2, 2, 2, 2], (2, 2), 9), [9, 9]), (([1, 2], (2, 1), 3), [1, 2]),
                    (([4, 1, 2, 1, 2, 2], (1, 2), 300), [4, 300, 300, 2])]
    return run_cases("merge", on_copies(fn), cases, "scan left to right; after a match jump past both tokens, "
                  "so 'aaa' becomes (aa) a, not two overlapping merges.",
                  lambda g, w: as_ints(g) == w, hidden_cases=hidden_cases, hidden=hidden)


def check_bpe_encode(fn, hidden: bool = False) -> Result:
    """fn(text, merges) -> ids: the UTF-8 bytes of text with the merges applied in rank order
    (the rank of a merge is its new id; the dict may list them in any order)."""
    wiki = {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    verse = _bpe(_VERSE, 330).merges

    def case(text, merges, seed):
        bpe = _bpe("a", 257)
        bpe.merges = dict(merges)
        return ((text, _shuffled(merges, seed)), bpe._encode_chunk(text))

    cases = [(("aaabdaaabac", dict(reversed(list(wiki.items())))), [258, 100, 258, 97, 99]),
             case("abracadabra", wiki, 1), case(" the summer", verse, 2)]
    hidden_cases = [case("", wiki, 3), case("x", verse, 4), case("Thou art more lovely, thee!", verse, 5),
                    case("fair from fair: déjà vu 👋", verse, 6), case("aaaaaaa", wiki, 7)]
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
    wiki = {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    verse = _bpe(_VERSE, 330)

    def case(text, bpe, seed):
        ids = bpe.encode(text)
        return ((ids, _shuffled(bpe.merges, seed)), list(text.encode("utf-8")))

    cases = [(([258, 100, 258, 97, 99], wiki), list(b"aaabdaaabac")), (([258], wiki), list(b"aaab")),
             case("summer's day", verse, 1)]
    hidden_cases = [(([], wiki), []), (([97, 257, 256], wiki), list(b"aabaa")),
                    case("Rough winds do shake the darling buds of May", verse, 2), case("fair déjà 👋", verse, 3)]
    return run_cases("unmerge", on_copies(fn), cases, "a token below 256 is a byte; any other token is the pair it was "
                  "merged from, and each half may itself be a merged token: invert the merges dict and expand "
                  "until only bytes are left.",
                  lambda g, w: as_ints(g) == w, hidden_cases=hidden_cases, hidden=hidden)

