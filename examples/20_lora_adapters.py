"""20. LoRA adapters: load, scale and unload an adapter at run time, with the cache kept apart per adapter set.

``load_adapter`` applies a LoRA adapter (a GGUF file) to a loaded model without reloading its weights;
``set_adapter_scale`` changes its strength (0 keeps it loaded but off), ``unload_adapter`` removes it
and ``list_adapters`` shows what is applied. One base model can thus serve several fine-tunes.

An adapter changes every KV value, so the adapter set (file hashes and scales) is part of the model's
cache identity: a row computed with an adapter never serves a request without it, and the other way
round. Right after loading one, a prompt the base model has cached is a ``cold`` miss; its repeat is an
``exact`` hit on the adapted row; after unloading, the base model's own rows hit again. A change waits
for the requests in flight to finish, so no row ever mixes two adapter sets.

The adapter here is a tiny random one written on the spot (``tests/native/fixtures.py``), so it
changes the output without making it better; use a real fine-tune's GGUF adapter the same way.

    .venv/bin/python examples/20_lora_adapters.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _common import MODEL, fact, parser, running_system

from actors.cache.policy import SavePolicy

REPO = Path(__file__).resolve().parent.parent
QUESTION = "Name three colours of the rainbow."
POLICY = SavePolicy(min_tokens=8, cold_min_tokens=8, boundary_trim_tokens=0, boundary_align_tokens=1)


def write_adapter(path: Path) -> Path:
    """A small random LoRA for SmolLM2-135M (attn_q/attn_v of three layers), written with the gguf package."""
    sys.path.insert(0, str(REPO))
    from tests.native.fixtures import write_lora

    return write_lora(path, scale=0.2)


def main() -> None:
    args = parser(__doc__).parse_args()
    with tempfile.TemporaryDirectory(prefix="llama-actors-lora-") as d, \
            running_system(args.port, policy=POLICY) as system:
        path = write_adapter(Path(d) / "tiny-lora.gguf")
        system.load_model(MODEL)
        prompt = system.apply_chat_template(MODEL, [{"role": "user", "content": QUESTION}])
        base = system.complete(MODEL, prompt, max_tokens=16)
        fact("base reply", repr(base.reply))
        fact("base cache_hit_kind", base.cache_hit_kind)
        fact("base repeat cache_hit_kind", system.complete(MODEL, prompt, max_tokens=16).cache_hit_kind)

        info = system.load_adapter(MODEL, str(path), scale=1.0)
        fact("loaded adapter", {"adapter_id": info["adapter_id"], "scale": info["scale"],
                                "sha256": info["sha256"][:16] + "..."})
        fact("list_adapters", [(a["adapter_id"], a["scale"]) for a in system.list_adapters(MODEL)])
        adapted = system.complete(MODEL, prompt, max_tokens=16)
        fact("adapter reply", repr(adapted.reply))
        fact("adapter changes the output", adapted.generated != base.generated)
        fact("adapter cache_hit_kind", adapted.cache_hit_kind)
        again = system.complete(MODEL, prompt, max_tokens=16)
        fact("adapter repeat cache_hit_kind", again.cache_hit_kind)
        fact("adapter repeat identical", again.generated == adapted.generated)

        system.set_adapter_scale(MODEL, info["adapter_id"], 0.0)  # loaded but off: the base model's identity
        off = system.complete(MODEL, prompt, max_tokens=16)
        fact("scale 0 cache_hit_kind", off.cache_hit_kind)
        fact("scale 0 equals base", off.generated == base.generated)

        system.unload_adapter(MODEL, info["adapter_id"])
        fact("list_adapters after unload", system.list_adapters(MODEL))
        back = system.complete(MODEL, prompt, max_tokens=16)
        fact("after unload cache_hit_kind", back.cache_hit_kind)
        fact("after unload equals base", back.generated == base.generated)


if __name__ == "__main__":
    main()
