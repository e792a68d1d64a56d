from __future__ import annotations

import dataclasses

import pytest
from cachetest_util import PROPS
from hypothesis import assume, given
from hypothesis import strategies as st

from actors.cache.config import CacheConfig, ConfigError
from actors.cache.policy import (
    PolicyError,
    SavePolicy,
    cold_save_length,
    cold_split,
    continued_save_length,
    prompt_row_due,
    should_save,
    trimmed_length,
)


@st.composite
def policies(draw: st.DrawFn) -> SavePolicy:
    align = draw(st.integers(1, 64))
    min_tokens = draw(st.integers(1, 200))
    cold_min = draw(st.integers(min_tokens, 400))
    cold_max = draw(st.integers(max(cold_min, align), 2000))
    interval = draw(st.one_of(st.just(0), st.integers(align, 1000)))
    trim = draw(st.integers(0, 64))
    return SavePolicy(min_tokens, cold_min, cold_max, interval, trim, align).validate()


@PROPS
@given(policies(), st.integers(0, 5000))
def test_trimmed_length_is_aligned_prefix_within_input(p: SavePolicy, n: int) -> None:
    t = trimmed_length(p, n)
    assert 0 <= t <= n
    assert t % p.boundary_align_tokens == 0
    assert t <= max(n - p.boundary_trim_tokens, 0)


@PROPS
@given(policies(), st.lists(st.integers(0, 50), max_size=3000))
def test_cold_split_concatenates_back(p: SavePolicy, tokens: list[int]) -> None:
    split = cold_split(p, tokens)
    n = cold_save_length(p, len(tokens))
    if split is None:
        assert n == 0
        return
    prefix, rest = split
    assert list(prefix) + list(rest) == tokens
    assert len(prefix) == n
    assert n % p.boundary_align_tokens == 0
    assert p.min_tokens <= n <= p.cold_max_tokens
    assert len(tokens) >= p.cold_min_tokens


@PROPS
@given(policies(), st.integers(0, 5000), st.integers(0, 5000))
def test_gates(p: SavePolicy, n: int, last: int) -> None:
    assume(last <= n)
    for reason in ("cold", "continued", "finish", "evict", "shutdown"):
        if n < p.min_tokens:
            assert not should_save(p, reason, n, last)
    if should_save(p, "continued", n, last):
        assert p.continued_interval > 0 and n - last >= p.continued_interval
    c = continued_save_length(p, n, last)
    if c:
        assert last < c <= n and c % p.boundary_align_tokens == 0


@PROPS
@given(policies(), st.integers(0, 5000), st.integers(0, 5000))
def test_a_prompt_row_needs_a_prompt_worth_it_and_enough_new_tokens(p: SavePolicy, n: int, restored: int) -> None:
    assume(restored <= n)
    due = prompt_row_due(p, n, restored)
    if n < p.min_tokens:
        assert not due
    elif restored == 0:
        assert due  # a cold prompt: a resend is an exact hit
    else:
        assert due == (n - restored >= p.cold_min_tokens)
    if due and restored:
        assert prompt_row_due(p, n, 0)  # restoring less never takes a row away


def test_a_chat_turn_gets_no_prompt_row() -> None:
    p = SavePolicy()
    assert prompt_row_due(p, 400, 0)  # the first turn: a cold system prompt
    assert not prompt_row_due(p, 520, 470)  # a later turn: the conversation restored, one message new
    assert prompt_row_due(p, 3000, 470)  # a long document after a cached prefix


def test_cold_gate_examples() -> None:
    p = SavePolicy(
        min_tokens=64, cold_min_tokens=256, cold_max_tokens=1024, boundary_trim_tokens=32, boundary_align_tokens=32
    )
    assert cold_save_length(p, 255) == 0
    assert cold_save_length(p, 300) == 256  # 300 - 32 = 268 -> 256
    assert cold_save_length(p, 5000) == 1024
    assert not should_save(p, "finish", 63)
    assert should_save(p, "finish", 64)
    assert not should_save(p, "finish", 100, last_saved_tokens=100)  # nothing new
    assert not should_save(SavePolicy(continued_interval=0), "continued", 10_000)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"min_tokens": 0}, "min_tokens"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"boundary_align_tokens": 0}, "boundary_align_tokens"),
        ({"cold_min_tokens": 10}, "cold_min_tokens"),
        ({"cold_max_tokens": 100}, "cold_max_tokens"),
        ({"continued_interval": 5}, "continued_interval"),
        ({"boundary_trim_tokens": 1.5}, "boundary_trim_tokens"),
        ({"min_tokens": True}, "min_tokens"),
    ],
)
def test_validate_names_the_field(change: dict[str, object], field: str) -> None:
    bad = dataclasses.replace(SavePolicy(), **change)
    with pytest.raises(PolicyError) as exc:
        bad.validate()
    assert exc.value.field == field
    assert field in str(exc.value)


def test_config_validation_surfaces_policy_field(tmp_path) -> None:
    with pytest.raises(ConfigError) as exc:
        CacheConfig.create(tmp_path, policy=SavePolicy(min_tokens=0))
    assert exc.value.key == "policy.min_tokens"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"block_size": 0}, "block_size"),
        ({"writers": 0}, "writers"),
        ({"default_tier": "disk"}, "default_tier"),
        ({"ram": -1}, "tiers.ram.quota_bytes"),
    ],
)
def test_config_errors_name_the_field(tmp_path, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        CacheConfig.create(tmp_path, **kwargs)
    assert exc.value.key == field
    assert exc.value.reason == "bad_config"
