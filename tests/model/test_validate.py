"""Request checks (actors.model.validate, options.parse_sampler_options): every bad value is a clean reason."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.model import messages as mm
from actors.model.errors import OptionError
from actors.model.options import INT32_MAX, parse_sampler_options
from actors.model.validate import (
    MAX_SESSION_ID_CHARS,
    RequestError,
    check_options,
    check_session_id,
    check_text,
    check_tier,
    is_utf8_text,
)

# Any Python value a JSON body, a TOML file or a careless caller could send.
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
# Text that may hold lone surrogates (Python strings can, UTF-8 cannot).
any_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()))
SAMPLER_KEYS = ["temperature", "top_k", "top_p", "min_p", "repetition_penalty", "repeat_last_n", "seed",
                "grammar", "grammar_root", "logit_bias"]


def test_lone_surrogates_are_not_text() -> None:
    assert not is_utf8_text("a\ud800b")
    with pytest.raises(RequestError) as e:
        check_text("x\udfff", "prompt")
    assert e.value.reason == "bad_request" and "prompt" in e.value.detail
    assert check_text("héllo ✓ 𝄞", "prompt") == "héllo ✓ 𝄞"


@given(any_text)
def test_text_check_agrees_with_utf8_encoding(s: str) -> None:
    try:
        s.encode("utf-8")
        ok = True
    except UnicodeEncodeError:
        ok = False
    assert is_utf8_text(s) is ok


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(SAMPLER_KEYS) | st.text(max_size=6), anything, max_size=4))
def test_sampler_options_are_parsed_or_refused_by_key(opts: dict[str, Any]) -> None:
    """Never a raw exception: a value C would choke on (past int32, a surrogate) is an OptionError."""
    try:
        parsed = parse_sampler_options(opts)
    except OptionError as e:
        assert (e.reason == "bad_option" and e.key in opts) or e.key in SAMPLER_KEYS
        return
    assert 0 <= parsed.top_k <= INT32_MAX and -1 <= parsed.repeat_last_n <= INT32_MAX
    assert 0 <= parsed.seed < 2**32
    assert parsed.grammar is None or is_utf8_text(parsed.grammar)
    assert all(0 <= t <= INT32_MAX and -100 <= b <= 100 for t, b in parsed.logit_bias)


@given(st.dictionaries(st.integers(0, 2**31 - 1), st.floats(-100, 100), max_size=20), st.booleans())
def test_logit_bias_keys_may_be_ids_or_their_json_strings(bias: dict[int, float], as_text: bool) -> None:
    given_map = {str(k) if as_text else k: v for k, v in bias.items()}
    assert parse_sampler_options({"logit_bias": given_map}).logit_bias == tuple(sorted(bias.items()))


@pytest.mark.parametrize("bias", [[1, 2], {"-1": 5}, {"x": 5}, {"3": 101}, {"3": float("nan")}, {"3": True},
                                  {str(i): 1 for i in range(1025)}])
def test_bad_logit_bias_is_a_bad_option(bias: Any) -> None:
    with pytest.raises(OptionError) as e:
        parse_sampler_options({"logit_bias": bias})
    assert e.value.key == "logit_bias"


@pytest.mark.parametrize("key,value", [("top_k", 2**31), ("repeat_last_n", 2**40), ("seed", 2**32),
                                       ("top_k", True), ("grammar", 'root ::= "\ud800"'), ("grammar_root", "r\udc00")])
def test_values_c_cannot_take_are_bad_options(key: str, value: Any) -> None:
    with pytest.raises(OptionError) as e:
        parse_sampler_options({key: value})
    assert e.value.key == key


FIELDS = {"max_tokens": anything, "sampler": anything, "parent_key": anything, "session_id": anything | any_text,
          "add_special": anything, "parse_special": anything, "cache": anything, "tier": anything,
          "stop_sequences": anything | st.lists(any_text, max_size=3), "thinking": anything,
          "thinking_budget_tokens": anything, "timeout_s": anything}


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(sorted(FIELDS)), st.none(), max_size=5).flatmap(
    lambda d: st.fixed_dictionaries({k: FIELDS[k] for k in d})))
def test_options_pass_or_fail_with_bad_option(fields: dict[str, Any]) -> None:
    opts = replace(mm.GenOptions(), **fields)
    try:
        checked = check_options(opts)
    except RequestError as e:
        assert e.reason == "bad_option", e
        return
    # What passes is what the engine and the C calls can take.
    assert isinstance(checked.add_special, bool) and isinstance(checked.parse_special, bool)
    assert checked.session_id is None or (is_utf8_text(checked.session_id)
                                          and 0 < len(checked.session_id) <= MAX_SESSION_ID_CHARS)
    assert all(is_utf8_text(s) for s in checked.stop_sequences)
    assert 0 <= checked.max_tokens <= INT32_MAX


def test_session_id_length_and_text() -> None:
    assert check_session_id("s" * MAX_SESSION_ID_CHARS) == "s" * MAX_SESSION_ID_CHARS
    for bad in ("s" * (MAX_SESSION_ID_CHARS + 1), "", "a\ud800", 5, ["x"]):
        with pytest.raises(RequestError) as e:
            check_session_id(bad)
        assert e.value.reason == "bad_option"


def test_tier_must_be_configured() -> None:
    assert check_tier(None, ["ram"]) is None
    assert check_tier("disk", ["ram", "disk"]) == "disk"
    with pytest.raises(RequestError) as e:
        check_tier("../../tmp/x", ["ram", "disk"])
    assert e.value.reason == "bad_option" and "ram, disk" in e.value.detail
    with pytest.raises(RequestError):
        check_tier("disk", ["ram"])  # a real tier name this cache does not have
    assert check_tier("disk", None) == "disk"  # no cache: any tier name is harmless
    with pytest.raises(RequestError):
        check_tier("floppy", None)
