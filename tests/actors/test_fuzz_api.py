"""Fuzzing the public API (``System``): every input ends in a result or a clean ``ModelError``.

Prompts (text with lone surrogates, token lists with anything in them), sampler values (past int32,
wrong types, grammars), stop lists, session ids, tiers, the special-token flags, ``expect_committed``
and ``timeout_s``.  A case passes
when it returns a result or raises ``ModelError`` whose reason is specific (never ``internal_error``)
within its time limit, and the model still answers afterwards.  The stub run is the wide one; the
real-model run takes a few examples through llama.cpp's own tokenizer, sampler and grammar parser.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.api import ModelError, System
from actors.model.llama import default_model_path
from tests.actors.conftest import running_system

pytestmark = pytest.mark.timeout(600)
CALL_TIMEOUT = 20.0  # a case that takes longer is a hang, reported as a TimeoutError

any_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
                   max_size=24)
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | any_text | st.binary(max_size=4))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
prompts = any_text | st.lists(st.integers(min_value=-5, max_value=2**40), max_size=12) | values
grammars = st.sampled_from(['root ::= "yes" | "no"', "root ::= [a-z]+", 'root ::= "\ud800"', "root ::= (",
                            "not gbnf at all", ""]) | any_text
sampler_values = {"temperature": values, "top_k": values, "top_p": values, "min_p": values,
                  "repetition_penalty": values, "repeat_last_n": values, "seed": values, "grammar": grammars}
options = st.fixed_dictionaries({}, optional={
    "max_tokens": st.integers(min_value=-2, max_value=6) | values,
    "stop_sequences": st.lists(any_text, max_size=3) | values,
    "session_id": any_text | st.text(min_size=250, max_size=300) | values,
    "add_special": values, "parse_special": values,
    "tier": st.sampled_from(["ram", "disk", "../../tmp/x", "floppy"]) | values,
    "sampler": st.fixed_dictionaries({}, optional=sampler_values) | values,
    "expect_committed": st.integers(min_value=-3, max_value=2**40) | st.lists(st.integers(-1, 300), max_size=4)
    | values,
    "timeout_s": values,
    **{k: v for k, v in sampler_values.items() if k in ("top_k", "repeat_last_n", "seed", "grammar")},
})


def call(system: System, model: str, how: str, prompt: Any, opts: dict[str, Any]) -> str:
    """One public call; returns ``ok`` or the error's reason.  Sessions it pinned are ended."""
    try:
        if how == "complete":
            system.complete(model, prompt, timeout=CALL_TIMEOUT, **opts)
        elif how == "infer":
            with system.infer(model, prompt, timeout=CALL_TIMEOUT, **opts) as stream:
                for _ in stream:
                    pass
        elif how == "tokenize":
            system.tokenize(model, prompt, add_special=opts.get("add_special", True),
                            parse_special=opts.get("parse_special", True))
        elif how == "detokenize":
            system.detokenize(model, prompt)
        else:
            system.end_session(model, opts.get("session_id"))
        return "ok"
    except ModelError as e:
        return e.reason
    finally:
        sid = opts.get("session_id")
        if isinstance(sid, str) and how in ("complete", "infer"):
            with contextlib.suppress(ModelError):
                system.end_session(model, sid)


def check_case(system: System, model: str, how: str, prompt: Any, opts: dict[str, Any]) -> None:
    reason = call(system, model, how, prompt, dict(opts))
    assert reason != "internal_error", (how, prompt, opts)


@pytest.fixture(scope="module")
def fuzz_stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("fuzz"), default_tier="ram") as system:
        system.load_model("stub", backend="stub", stub={"n_seq_max": 2, "n_batch": 64})
        yield system


HOW = st.sampled_from(["complete", "infer", "tokenize", "detokenize", "end_session"])


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(how=HOW, prompt=prompts, opts=options)
def test_fuzz_stub_never_internal_error(fuzz_stub: System, how: str, prompt: Any, opts: dict[str, Any]) -> None:
    check_case(fuzz_stub, "stub", how, prompt, opts)


def test_fuzz_stub_system_answers_afterwards(fuzz_stub: System) -> None:
    r = fuzz_stub.complete("stub", "still here", max_tokens=3, timeout=CALL_TIMEOUT)
    assert r.finish_reason == "length" and len(r.generated) == 3
    assert [m["model_id"] for m in fuzz_stub.list_models()] == ["stub"]
    status = fuzz_stub.status("stub")
    assert status["counters"]["requests"] > 0 and not status["last_error"], status["last_error"]


@pytest.mark.parametrize("sampler,reason", [("notadict", "bad_option"), ([1, 2], "bad_option")])
def test_a_sampler_that_is_not_a_dict_is_a_bad_option_in_the_client(fuzz_stub: System, sampler: Any,
                                                                   reason: str) -> None:
    with pytest.raises(ModelError) as e:
        fuzz_stub.complete("stub", "x", sampler=sampler)
    assert e.value.reason == reason


def test_named_findings_get_specific_reasons(fuzz_stub: System) -> None:
    """The inputs the issue's fuzz run found, one by one, with the reason each one gets."""
    cases: list[tuple[Any, dict[str, Any], str]] = [
        ("a\ud800b", {}, "bad_request"),
        ("hi", {"grammar": 'root ::= "\udc00"'}, "bad_option"),
        ("hi", {"stop_sequences": ["\ud800"]}, "bad_option"),
        ("hi", {"session_id": "s\udfff"}, "bad_option"),
        ("hi", {"session_id": "s" * 257}, "bad_option"),
        ("hi", {"top_k": 2**31}, "bad_option"),
        ("hi", {"repeat_last_n": 2**40}, "bad_option"),
        ("hi", {"seed": 2**64}, "bad_option"),
        ("hi", {"add_special": "yes"}, "bad_option"),
        ("hi", {"parse_special": 1}, "bad_option"),
        ("hi", {"tier": "../../tmp/x"}, "bad_option"),
        (5, {}, "bad_request"),
    ]
    for prompt, opts, want in cases:
        with pytest.raises(ModelError) as e:
            fuzz_stub.complete("stub", prompt, timeout=CALL_TIMEOUT, **opts)
        assert e.value.reason == want, (prompt, opts, e.value)
    with pytest.raises(ModelError) as e:
        fuzz_stub.complete("stub", "hi", tier="../../tmp/x")
    assert "ram" in e.value.detail  # names the configured tiers


def malformed_gguf(kind: str, data: bytes) -> bytes:
    """A file that is not a loadable model: random bytes, a GGUF magic with garbage, or a real model cut short."""
    if kind == "random":
        return data
    if kind == "magic":
        return b"GGUF" + data
    real = default_model_path().read_bytes()
    return real[: 8 + (len(data) * 997) % (len(real) // 4)]


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(["random", "magic", "truncated"]), data=st.binary(max_size=256))
def test_a_failed_gguf_load_leaves_no_entry(fuzz_stub: System, tmp_path_factory: pytest.TempPathFactory,
                                            kind: str, data: bytes) -> None:
    junk = tmp_path_factory.mktemp("gguf") / "junk.gguf"
    junk.write_bytes(malformed_gguf(kind, data))
    with pytest.raises(ModelError) as e:
        fuzz_stub.load_model("junk", path=str(junk), timeout=120)
    assert e.value.reason in ("malformed_gguf", "load_failed")
    assert [m["model_id"] for m in fuzz_stub.list_models()] == ["stub"]


@pytest.fixture(scope="module")
def fuzz_real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("fuzzreal"), default_tier="ram") as system:
        system.load_model("smol", context={"n_ctx": 512, "n_batch": 64, "n_seq_max": 2, "n_threads": 1})
        yield system


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(how=HOW, prompt=prompts, opts=options)
def test_fuzz_real_model_never_internal_error(fuzz_real: System, how: str, prompt: Any,
                                              opts: dict[str, Any]) -> None:
    check_case(fuzz_real, "smol", how, prompt, opts)


def test_fuzz_real_named_findings_and_answers_afterwards(fuzz_real: System) -> None:
    for prompt, opts in [("a\ud800b", {}), ("hi", {"grammar": 'root ::= "\udc00"'}), ("hi", {"top_k": 2**31}),
                         ("hi", {"repeat_last_n": 2**31}), ("hi", {"parse_special": "no"})]:
        with pytest.raises(ModelError) as e:
            fuzz_real.complete("smol", prompt, timeout=CALL_TIMEOUT, **opts)
        assert e.value.reason in ("bad_request", "bad_option"), (prompt, opts, e.value)
    r = fuzz_real.complete("smol", "The capital of France is", max_tokens=4, timeout=60)
    assert len(r.generated) == 4
