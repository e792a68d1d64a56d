"""Reusing the tokens of a text's remembered start: always llama.cpp's own tokens, and less work."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.model.llama import Model
from actors.model.prefix_tokens import (
    ATTR_CONTROL,
    ATTR_RSTRIP,
    BPE,
    PrefixTokenizer,
    SpecialToken,
    Vocab,
    can_overlap,
    cut_points,
)

# --------------------------------------------------------------------------- the rules, pure


def test_a_cut_follows_each_special_token_the_tokenizer_certainly_splits_on() -> None:
    rivals = {b"<e>": [], b"<s>": []}
    assert cut_points(b"<s>hi<e>\n<s>you", rivals) == [3, 8, 12]
    assert cut_points(b"plain text", rivals) == []


def test_no_cut_where_a_longer_special_token_could_claim_the_bytes_first() -> None:
    # "<e>x" is matched before "<e>" (longer first): cutting after "<e>" would split it.
    rivals = {b"<e>": [b"<e>x"], b"<e>x": []}
    assert cut_points(b"a<e>xb", rivals) == [5]  # after the longer one only
    assert cut_points(b"a<e>b", rivals) == [4]


def test_no_cut_inside_overlapping_occurrences_of_one_token() -> None:
    assert cut_points(b"ababa", {b"aba": []}) == []  # "aba" at 0 and at 2 overlap: no cut is certain
    assert cut_points(b"aba-aba", {b"aba": []}) == [3, 7]


@given(st.binary(min_size=1, max_size=6), st.binary(min_size=1, max_size=6))
def test_can_overlap_is_exactly_sharing_bytes_in_some_placement(a: bytes, b: bytes) -> None:
    def shares(x: bytes, y: bytes) -> bool:  # y placed at every offset against x
        return any(all(x[i + k] == y[k] for k in range(len(y)) if 0 <= i + k < len(x))
                   and any(0 <= i + k < len(x) for k in range(len(y)))
                   for i in range(-len(y) + 1, len(x)))

    assert can_overlap(a, b) == shares(a, b)


SPECIAL_IDS = {b"<e>": 2, b"<s>": 3}


class CountingTokenizer:
    """A tokenizer that splits on ``<e>`` and ``<s>`` like llama.cpp (one id per special, one per byte
    of plain text, BOS 1 with add_special) and counts the bytes it was given."""

    def __init__(self) -> None:
        self.bytes_seen = 0

    def __call__(self, text: bytes, add_special: bool, parse_special: bool) -> list[int]:
        self.bytes_seen += len(text)
        out = [1] if add_special else []
        i = 0
        while i < len(text):
            for s, tid in SPECIAL_IDS.items():
                if parse_special and text.startswith(s, i):
                    out.append(tid)
                    i += len(s)
                    break
            else:
                out.append(1000 + text[i])
                i += 1
        return out


VOCAB = Vocab(BPE, True, False, False, (SpecialToken(2, b"<e>", ATTR_CONTROL), SpecialToken(3, b"<s>", ATTR_CONTROL)))


def test_a_resent_conversation_is_tokenized_only_where_it_is_new() -> None:
    base = CountingTokenizer()
    pt = PrefixTokenizer(base, VOCAB)
    turn1 = b"<s>system prompt, long<e>\n<s>user: hi<e>\n<s>"
    turn2 = turn1 + b"assistant: hello<e>\n<s>user: more<e>\n<s>"
    assert pt.tokenize(turn1, True, True) == CountingTokenizer()(turn1, True, True)
    base.bytes_seen = 0
    assert pt.tokenize(turn2, True, True) == CountingTokenizer()(turn2, True, True)
    assert base.bytes_seen == len(turn2) - len(turn1)  # only the new turn
    assert pt.stats.reused == 1 and pt.stats.reused_bytes == len(turn1)
    base.bytes_seen = 0
    assert pt.tokenize(turn2, False, True) == CountingTokenizer()(turn2, False, True)  # no BOS: its own starts
    assert base.bytes_seen == len(turn2)


def test_nothing_is_reused_where_it_would_not_be_exact() -> None:
    text = b"<s>system<e>\n<s>user"
    for vocab in (Vocab(BPE, True, True, False, VOCAB.specials),  # add_special puts an EOS at the end
                  Vocab(4, True, False, False, VOCAB.specials),  # a vocabulary kind not known to cut cleanly
                  Vocab(BPE, True, False, False, (SpecialToken(2, b"<e>", ATTR_CONTROL | ATTR_RSTRIP),))):
        base = CountingTokenizer()
        pt = PrefixTokenizer(base, vocab)
        for _ in range(2):
            pt.tokenize(text, True, True)
        assert pt.stats.reused == 0 and base.bytes_seen == 2 * len(text)  # tokenized whole, both times


def test_the_remembered_starts_stay_within_their_token_budget() -> None:
    pt = PrefixTokenizer(CountingTokenizer(), VOCAB, max_tokens=40)
    texts = [b"<s>" + bytes([65 + i]) * 10 + b"<e>tail" for i in range(10)]  # 13 tokens up to the last cut
    for t in texts:
        pt.tokenize(t, True, True)
    assert pt.remembered_tokens == 39  # the last three
    before = pt.stats.reused
    pt.tokenize(texts[-1], True, True)
    pt.tokenize(texts[0], True, True)
    assert pt.stats.reused - before == 1  # the newest start is still there, the oldest is gone


# --------------------------------------------------------------------------- the real tokenizer


@pytest.fixture(scope="module")
def prefix(model: Model) -> PrefixTokenizer:
    vocab = model.vocab()
    assert vocab.reusable and {s.text for s in vocab.specials} >= {b"<|im_start|>", b"<|im_end|>"}
    return PrefixTokenizer(model.tokenize, vocab)


PIECES = st.sampled_from(["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_", "end|>", "<", "|>", "\n", " ",
                          "  ", "\t", "user", "assistant", "system", "Hello", " world", "é", "日本", "🙂", "42",
                          "<repo_name>", "<reponame>", "ab", "'s", "\n\n"])
TEXTS = st.lists(PIECES, max_size=30).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(TEXTS, TEXTS, st.booleans(), st.booleans()), min_size=1, max_size=4))
def test_tokens_equal_llama_cpp_for_texts_and_their_extensions(
        model: Model, prefix: PrefixTokenizer, turns: list[tuple[str, str, bool, bool]]) -> None:
    """Each text, then the same text extended (a conversation's next turn): the tokens are llama.cpp's."""
    for start, more, add_special, parse_special in turns:
        for text in (start, start + more):
            raw = text.encode()
            assert prefix.tokenize(raw, add_special, parse_special) == model.tokenize(raw, add_special, parse_special)


def test_a_growing_chat_reuses_its_start_and_keeps_llama_cpp_tokens(model: Model) -> None:
    prefix = PrefixTokenizer(model.tokenize, model.vocab())
    messages = [{"role": "system", "content": "You answer questions about opening hours. " * 20}]
    for turn in range(4):
        messages.append({"role": "user", "content": f"Open on day {turn}?"})
        raw = model.apply_chat_template(messages).encode()
        assert prefix.tokenize(raw, True, True) == model.tokenize(raw, True, True)
        messages.append({"role": "assistant", "content": f"Yes, day {turn}, 9 to 5."})
    assert prefix.stats.reused == 3  # every turn after the first
