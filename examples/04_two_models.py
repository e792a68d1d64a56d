"""04. Several models in one system, sharing one cache without ever crossing rows.

Each ``load_model`` starts its own model process under the model supervisor; requests are routed by
model id, and one model crashing or unloading leaves the other alone. Cache rows are keyed by the
model file's fingerprint, its quantization and the context settings that change the byte layout of a
saved state (K/V types, flash attention), so a row is only ever restored into a model that can use
it. Here both ids load the bundled GGUF, but "b" runs with flash attention (another KV layout) and a
smaller context: the prompt "a" saved is still cold on "b", and each model then hits its own row.

    .venv/bin/python examples/04_two_models.py
"""

from __future__ import annotations

from _common import fact, parser, running_system

PROMPT = (
    "Summarise in one sentence: The city council met on Tuesday to discuss the new bicycle lanes. After a "
    "long debate, the members agreed to build two protected lanes along the river road, to lower the speed "
    "limit near the schools, and to review the results after one year. Several shop owners on the river road "
    "asked the council for more parking spaces."
)


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model("a")  # the bundled model, default context (n_ctx 4096)
        # Same GGUF, another KV layout (flash attention transposes V): rows of "a" never restore into "b".
        system.load_model("b", context={"n_ctx": 1024, "flash_attn": "true"})
        fact("models", sorted(m["model_id"] for m in system.list_models()))
        a1 = system.complete("a", PROMPT, max_tokens=16)
        b1 = system.complete("b", PROMPT, max_tokens=16)
        a2 = system.complete("a", PROMPT, max_tokens=16)
        b2 = system.complete("b", PROMPT, max_tokens=16)
        fact("a reply", repr(a1.reply.strip()))
        fact("b reply", repr(b1.reply.strip()))
        fact("a first cache_hit_kind", a1.cache_hit_kind)
        fact("b first cache_hit_kind", b1.cache_hit_kind)
        fact("a repeat cache_hit_kind", a2.cache_hit_kind)
        fact("b repeat cache_hit_kind", b2.cache_hit_kind)
        fact("distinct cache keys", a1.finish_key != b1.finish_key)
        fact("a identical on repeat", a1.generated == a2.generated)
        fact("b identical on repeat", b1.generated == b2.generated)
        system.unload_model("a")
        system.unload_model("b")
        fact("models after unload", [m["model_id"] for m in system.list_models()])


if __name__ == "__main__":
    main()
