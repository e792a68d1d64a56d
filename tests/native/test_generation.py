"""Decoding, sampling, KV pack/unpack, multi-sequence step and error paths on the real model."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.model.errors import CapacityError, InvalidInputError, LlamaError, ReleasedError, StateError
from actors.model.llama import Context, Decode, Model, Prefill, Sampler
from tests.native.conftest import PROMPT

N = 12


def cold(model: Model, prompt: list[int], n: int = N, **sampler: object) -> list[int]:
    with model.new_context(n_ctx=512) as c, model.sampler(**sampler) as s:
        return c.generate(0, prompt, s, n)


def test_greedy_is_deterministic_and_sensible(model: Model) -> None:
    p = model.tokenize(PROMPT)
    a = cold(model, p)
    b = cold(model, p)
    assert a == b
    assert "Paris" in model.detokenize(a)


def test_seeded_sampling_is_reproducible(model: Model) -> None:
    p = model.tokenize("Once upon a time")
    a = cold(model, p, 24, temperature=1.0, seed=42, top_k=0, top_p=1.0, min_p=0.0)
    b = cold(model, p, 24, temperature=1.0, seed=42, top_k=0, top_p=1.0, min_p=0.0)
    c = cold(model, p, 24, temperature=1.0, seed=43, top_k=0, top_p=1.0, min_p=0.0)
    assert a == b
    assert a != c


def test_grammar_forces_shape(model: Model) -> None:
    p = model.tokenize("Is the sky green? Answer:")
    out = model.detokenize(cold(model, p, 8, grammar='root ::= " yes" | " no"'))
    assert out in (" yes", " no")
    digits = model.detokenize(cold(model, p, 12, grammar='root ::= [0-9] [0-9] [0-9] "-" [a-z]+'))
    assert digits[:3].isdigit() and digits[3] == "-" and digits[4:].isalpha()


def test_logit_bias_bans_and_forces_tokens(model: Model) -> None:
    p = model.tokenize(PROMPT)
    plain = cold(model, p, 6)
    banned = cold(model, p, 6, logit_bias={plain[0]: -100})
    assert banned[0] != plain[0]
    forced = model.tokenize(" blue", add_special=False)[0]
    assert cold(model, p, 3, logit_bias={forced: 100}) == [forced] * 3


def test_logit_bias_outside_the_vocabulary_is_refused_in_the_shim_too(model: Model) -> None:
    from actors.model.native import native

    ffi, lib = native()
    params = ffi.new("la_sampler_params*")
    params.top_p, params.repeat_penalty = 1.0, 1.0
    out = ffi.new("la_sampler**")
    for token, n in ((model.info.n_vocab, 1), (-1, 1), (0, -1)):
        tokens, values = ffi.new("int32_t[]", [token]), ffi.new("float[]", [1.0])
        params.bias_tokens, params.bias_values, params.n_bias = tokens, values, n
        assert lib.la_sampler_new(model._ptr(), params, out) == lib.LA_E_BAD_ARG
    with pytest.raises(LlamaError) as e:  # the binding checks first, with the option's name
        model.sampler(logit_bias={model.info.n_vocab: 1.0})
    assert e.value.reason == "bad_option" and "logit_bias" in e.value.detail


def test_invalid_grammar_is_clear_error(model: Model) -> None:
    with pytest.raises(InvalidInputError) as e:
        model.sampler(grammar="root ::= (unclosed")
    assert e.value.reason == "bad_grammar"


def test_kv_round_trip_matches_cold(model: Model, greedy: Sampler) -> None:
    p = model.tokenize(PROMPT)
    reference = cold(model, p)
    with model.new_context(n_ctx=512) as a:
        a.prefill(0, p)
        blob = a.kv_pack(0)
        logits = a.get_logits(0)
    assert len(blob) > 100_000
    # Fresh context: restore state and logits, then sample with no decode in between.
    with model.new_context(n_ctx=512) as b:
        b.kv_unpack(0, blob)
        assert b.seq_len(0) == len(p)
        with pytest.raises(StateError):
            b.step([Decode(0, greedy)])
        b.set_logits(0, logits)
        assert b.generate(0, [], greedy, N) == reference
    # Without saved logits: drop the last position and re-prefill it (the primer path).
    with model.new_context(n_ctx=512) as c, model.sampler() as s:
        c.kv_unpack(0, blob)
        c.seq_rm(0, len(p) - 1, -1)
        assert c.generate(0, p[-1:], s, N) == reference


def test_pack_seq_a_unpack_into_seq_b(model: Model) -> None:
    p = model.tokenize(PROMPT)
    reference = cold(model, p)
    with model.new_context(n_ctx=1024, n_seq_max=2) as c, model.sampler() as s:
        c.prefill(0, p)
        logits = c.get_logits(0)
        c.kv_unpack(1, c.kv_pack(0))
        c.seq_clear(0)
        c.set_logits(1, logits)
        assert c.seq_len(0) == 0
        assert c.generate(1, [], s, N) == reference


def test_unpack_foreign_blob_is_error(model: Model) -> None:
    p = model.tokenize(PROMPT)
    with model.new_context(n_ctx=512, type_k="f32", type_v="f32", flash_attn=False) as a:
        a.prefill(0, p)
        blob32 = a.kv_pack(0)
    with model.new_context(n_ctx=512, flash_attn=False) as b:
        with pytest.raises(InvalidInputError) as e:
            b.kv_unpack(0, blob32)
        assert e.value.reason == "unpack_failed"
        with pytest.raises(InvalidInputError):
            b.kv_unpack(0, b"\x01" * 1000)
        assert b.seq_len(0) == 0
        # The context is still usable afterwards.
        b.prefill(0, p)
        assert b.seq_len(0) == len(p)


def test_step_three_sequences_equals_solo_runs(model: Model) -> None:
    prompts = [model.tokenize(t) for t in (PROMPT, "def fibonacci(n):", "Roses are red,")]
    solo = [cold(model, p) for p in prompts]
    outs: list[list[int]] = [[], [], []]
    with model.new_context(n_ctx=1536, n_seq_max=3, n_batch=128) as c:
        samplers = [model.sampler() for _ in prompts]
        # Staggered admission: seq 0 prefills alone, seq 1 prefills while 0
        # decodes, seq 2 prefills while both decode; then all three decode.
        ticks: list[list[Prefill | Decode]] = [
            [Prefill(0, prompts[0])],
            [Decode(0, samplers[0]), Prefill(1, prompts[1])],
            [Decode(0, samplers[0]), Decode(1, samplers[1]), Prefill(2, prompts[2])],
        ]
        for rows in ticks:
            for res in c.step(rows):
                if res.token is not None:
                    outs[res.seq].append(res.token)
        active = {0, 1, 2}
        while active:
            for res in c.step([Decode(s, samplers[s]) for s in sorted(active)]):
                if res.eog:
                    active.discard(res.seq)
                    continue
                outs[res.seq].append(res.token)  # type: ignore[arg-type]
                if len(outs[res.seq]) >= N:
                    active.discard(res.seq)
    assert outs == solo


def test_chunked_prefill_equals_one_shot(model: Model) -> None:
    p = model.tokenize("In the beginning the Universe was created. This has made a lot of people very angry "
                       "and been widely regarded as a bad move. Many races believe that it was created")
    reference = cold(model, p)
    with model.new_context(n_ctx=512) as c, model.sampler() as s:
        for i in range(0, len(p), 7):
            c.prefill(0, p[i:i + 7])
        assert c.generate(0, [], s, N) == reference
    # n_batch smaller than the prompt: prefill() slices it into n_batch steps.
    with model.new_context(n_ctx=512, n_batch=8, n_ubatch=8) as c, model.sampler() as s:
        assert c.generate(0, p, s, N) == reference


def test_forward_argmax_matches_greedy(model: Model) -> None:
    p = model.tokenize(PROMPT)
    ref = cold(model, p, 4)
    with model.new_context(n_ctx=512) as c:
        c.prefill(0, p[:-1])
        am = c.forward_argmax(0, [p[-1], *ref[:3]])
    assert am == ref


def test_context_overflow(model: Model, greedy: Sampler) -> None:
    with model.new_context(n_ctx=256, n_batch=512) as c:
        with pytest.raises(CapacityError) as e:
            c.prefill(0, [504] * 300)
        assert e.value.reason == "context_overflow"
        c.prefill(0, [504] * 255)
        c.step([Decode(0, greedy)])
        with pytest.raises(CapacityError):
            c.step([Decode(0, greedy)])


def test_failed_prefill_leaves_the_sequence_as_it_was(model: Model) -> None:
    with model.new_context(n_ctx=512, n_batch=8, n_ubatch=8) as c:
        c.prefill(0, [1, 504])
        with pytest.raises(InvalidInputError) as e:
            c.prefill(0, [504] * 15 + [49152])  # the bad token sits in the second n_batch slice
        assert e.value.reason == "bad_token"
        assert c.seq_len(0) == 2
        with pytest.raises(CapacityError) as e:
            c.prefill(0, [504] * 511)  # refused before any slice is decoded
        assert e.value.reason == "context_overflow"
        assert c.seq_len(0) == 2


def test_batch_overflow(model: Model, greedy: Sampler) -> None:
    with model.new_context(n_ctx=512, n_batch=32, n_seq_max=2) as c:
        with pytest.raises(CapacityError) as e:
            c.step([Prefill(0, [504] * 20), Prefill(1, [504] * 20)])
        assert e.value.reason == "batch_overflow"
        # Nothing was decoded by the refused tick.
        assert c.seq_len(0) == 0 and c.seq_len(1) == 0


def test_no_logits_before_prefill(ctx: Context, greedy: Sampler) -> None:
    with pytest.raises(StateError) as e:
        ctx.step([Decode(0, greedy)])
    assert e.value.reason == "no_logits"
    with pytest.raises(StateError):
        ctx.get_logits(0)


def test_bad_token_and_seq(ctx: Context, greedy: Sampler) -> None:
    with pytest.raises(InvalidInputError) as e:
        ctx.prefill(0, [1, 49152])
    assert e.value.reason == "bad_token"
    with pytest.raises(InvalidInputError) as e:
        ctx.prefill(1, [1])
    assert e.value.reason == "bad_seq"
    with pytest.raises(InvalidInputError):
        ctx.step([Prefill(0, [1]), Prefill(0, [2])])
    assert ctx.seq_len(0) == 0


def test_closed_sampler_in_step(model: Model, ctx: Context) -> None:
    s = model.sampler()
    ctx.prefill(0, [1, 504])
    s.close()
    with pytest.raises(ReleasedError):
        ctx.step([Decode(0, s)])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=-(2**31), max_value=2**31 - 1), max_size=40), st.integers(-2, 3))
def test_random_tokens_never_crash(model: Model, tokens: list[int], seq: int) -> None:
    with model.new_context(n_ctx=256, n_batch=32) as c:
        try:
            c.prefill(seq, tokens)
        except LlamaError as e:
            assert e.reason in {"bad_token", "bad_seq", "bad_arg", "context_overflow"}
        else:
            assert c.seq_len(seq) == len(tokens)


def test_sample_then_prefill_equals_decode_rows(model: Model) -> None:
    p = model.tokenize(PROMPT)
    reference = cold(model, p)
    out: list[int] = []
    with model.new_context(n_ctx=512) as c, model.sampler() as s:
        c.prefill(0, p)
        for _ in range(N):
            r = c.sample(0, s)  # known before any decode: what a warm hit streams first
            assert not c.has_logits(0)
            if r.eog:
                break
            out.append(r.token)  # type: ignore[arg-type]
            c.prefill(0, [r.token])  # type: ignore[list-item]
    assert out == reference
