"""The native binding alone: load the bundled model, complete a prompt cold, then warm from a KV restore.

Cold: prefill every prompt token, then decode. Warm: restore the saved
sequence state and the last position's logits (what a cache row holds), then
decode straight away. Both replies must be identical, token for token.
"""

from __future__ import annotations

import time

from actors.model.llama import Model

SYSTEM = (
    "You are a support assistant for a hardware store. Answer in one or two sentences. "
    "Store hours are 8am to 6pm Monday to Saturday, closed on Sunday. We sell tools, paint, "
    "garden supplies, plumbing and electrical parts. Returns are accepted within 30 days with a receipt. "
    "Delivery is free for orders over 50 dollars within 20 miles of the store. "
    "Never invent products; if unsure, suggest calling the store."
)


def main() -> None:
    with Model() as model, model.new_context(n_ctx=2048) as ctx:
        print(f"model: {model.info.description}, {model.info.n_params / 1e6:.0f}M params, {model.path.name}")
        prompt = model.apply_chat_template(
            [{"role": "user", "content": "Are you open on Sunday, and can I return a drill?"}], system=SYSTEM)
        tokens = model.tokenize(prompt, parse_special=True)
        greedy = model.sampler()

        t0 = time.perf_counter()
        ctx.prefill(0, tokens)
        t_cold_prefill = time.perf_counter() - t0
        blob, logits = ctx.kv_pack(0), ctx.get_logits(0)
        cold = ctx.generate(0, [], greedy, 48)
        t_cold = time.perf_counter() - t0

        ctx.seq_clear(0)
        greedy.reset()
        t1 = time.perf_counter()
        ctx.kv_unpack(0, blob)
        ctx.set_logits(0, logits)
        t_restore = time.perf_counter() - t1
        warm = ctx.generate(0, [], greedy, 48)
        t_warm = time.perf_counter() - t1

        print(f"prompt: {len(tokens)} tokens; saved state {len(blob) / 1e6:.1f} MB + {len(logits) // 1024} KB logits")
        print(f"reply: {model.detokenize(cold).strip()!r}")
        print(f"cold: prefill {t_cold_prefill * 1000:.1f} ms, total {t_cold * 1000:.1f} ms")
        print(f"warm: restore {t_restore * 1000:.1f} ms, total {t_warm * 1000:.1f} ms")
        print(f"time to first token, cold/warm: {t_cold_prefill / t_restore:.0f}x")
        print(f"identical replies: {cold == warm}")
        if cold != warm:
            raise SystemExit("warm reply differs from cold reply")


if __name__ == "__main__":
    main()
