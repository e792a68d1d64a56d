"""Files written at test time with the `gguf` package: a LoRA adapter and broken models."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_lora(path: Path, n_embd: int = 576, rank: int = 4, layers: tuple[int, ...] = (0, 1, 2), seed: int = 0,
               scale: float = 0.5) -> Path:
    """A LoRA adapter for SmolLM2-135M touching attn_q/attn_v of a few layers.

    ggml stores shapes reversed: lora_a is [n_in, rank] and lora_b [rank, n_out],
    so the numpy arrays are (rank, n_in) and (n_out, rank).
    """
    import gguf

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(rank))
    for layer in layers:
        for name, n_out in (("attn_q", n_embd), ("attn_v", 192)):
            a = (rng.standard_normal((rank, n_embd)) * scale).astype(np.float32)
            b = (rng.standard_normal((n_out, rank)) * scale).astype(np.float32)
            w.add_tensor(f"blk.{layer}.{name}.weight.lora_a", a)
            w.add_tensor(f"blk.{layer}.{name}.weight.lora_b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_unknown_arch(path: Path) -> Path:
    """A well-formed GGUF container whose architecture llama.cpp does not know."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch="no-such-arch")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
