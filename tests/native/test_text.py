"""Tokenizer and chat template on the real model."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.model.errors import InvalidInputError, OptionError
from actors.model.llama import Model


def test_tokenize_known_ids(model: Model) -> None:
    toks = model.tokenize("The capital of France is", add_special=False)
    assert toks == [504, 3575, 282, 4649, 314]
    assert model.detokenize(toks) == "The capital of France is"


# llama.cpp's tokenizer drops C0 control characters and maps unassigned or
# private-use code points to U+FFFD, so the property is stated over printable
# text (letters, marks, numbers, punctuation, symbols, spaces, tab and newline).
PRINTABLE = st.characters(categories=("L", "M", "N", "P", "S", "Zs"), include_characters="\n\t")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=PRINTABLE, max_size=80))
def test_round_trip(model: Model, text: str) -> None:
    toks = model.tokenize(text, add_special=False)
    assert model.detokenize(toks) == text


def test_special_tokens_parse_only_when_asked(model: Model) -> None:
    plain = model.tokenize("<|im_start|>", add_special=False, parse_special=False)
    special = model.tokenize("<|im_start|>", add_special=False, parse_special=True)
    assert len(special) == 1
    assert len(plain) > 1


def test_out_of_vocab_detokenize(model: Model) -> None:
    with pytest.raises(InvalidInputError) as e:
        model.detokenize([1, 999_999])
    assert e.value.reason == "bad_token"
    with pytest.raises(InvalidInputError):
        model.token_to_piece(-3)


def test_is_eog(model: Model) -> None:
    assert model.is_eog(model.info.token_eos)
    assert not model.is_eog(504)


def test_chat_template_rendered(model: Model) -> None:
    text = model.apply_chat_template(
        [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
         {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]}],
        system="You are terse.",
    )
    assert text.startswith("<|im_start|>system\nYou are terse.<|im_end|>\n")
    assert "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n" in text
    assert "part one\npart two" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert model.chat_template() is not None


def test_chat_template_tools_described_in_system(model: Model) -> None:
    tool = {"name": "get_weather", "parameters": {"type": "object"}}
    text = model.apply_chat_template([{"role": "user", "content": "weather?"}], tools=[tool])
    assert '"name": "get_weather"' in text
    assert text.index("get_weather") < text.index("weather?")


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": [{"type": "image", "source": "x"}]}],
        [{"role": "user", "content": 42}],
        [{"content": "no role"}],
        "just a string",
        [["user", "hi"]],
    ],
)
def test_chat_template_bad_content_is_clear_error(model: Model, messages: object) -> None:
    with pytest.raises(OptionError) as e:
        model.apply_chat_template(messages)  # type: ignore[arg-type]
    assert e.value.key == "messages"
