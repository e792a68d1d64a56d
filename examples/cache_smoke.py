"""The 10-second cache smoke test: no model, no GPU.

Starts a disk tier in a temporary directory, looks a prompt up (miss),
saves a blob with its row metadata, looks it up again (exact hit), loads
it back and prints the counters: one cold save, one miss, one exact hit.

    python examples/cache_smoke.py            # plain Python (CacheService)
    python examples/cache_smoke.py --actors   # same flow through thespian actors

Exits 0 on success and removes its temporary directory either way.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.cache import CacheConfig, CacheService, RowMeta

FINGERPRINT = b"\xaa" * 32  # sha256 of the GGUF in real use
CTX_HASH = b"\xbb" * 32  # ctx_params_hash({...}) in real use
QUANT = "f16"
TOKENS = [1, 2, 3]
BLOB = b"hi"


def run_plain(config: CacheConfig) -> dict[str, int]:
    with CacheService(config, writers=0) as service:
        client = service.client()
        assert client.lookup(FINGERPRINT, QUANT, CTX_HASH, TOKENS) is None  # miss
        meta = RowMeta(fingerprint=FINGERPRINT, quant=QUANT, ctx_hash=CTX_HASH, tokens=TOKENS, context_size=4096)
        saved = client.save("cold", meta, BLOB, tier="disk")
        assert saved.accepted, saved
        hit = client.lookup(FINGERPRINT, QUANT, CTX_HASH, TOKENS)
        assert hit is not None and hit.kind == "exact", hit
        loaded = client.load(hit)
        assert loaded is not None and bytes(loaded.kv) == BLOB
        print(f"saved {saved.key.hex()[:16]}… to {hit.location}, loaded {bytes(loaded.kv)!r}")
        return service.get_counters()


def run_actors(config: CacheConfig, tmp: Path, port: int | None = None) -> dict[str, int]:
    import time

    from actors.cache import messages as m
    from actors.cache.actors import CacheClientHost
    from actors.cache.admin import CacheAdmin
    from actors.system import start_system

    def call(system: Any, host: Any, op: str, **args: Any) -> Any:
        reply = system.ask(host, m.HostCall(op, args))
        assert not reply.error, reply.error
        return reply.value

    with start_system(port) as system:
        admin = CacheAdmin.start(system, config)
        host = system.create(CacheClientHost)
        system.ask(host, m.ClientStart(config, admin.meta))
        lookup = {"fingerprint": FINGERPRINT, "quant": QUANT, "ctx_hash": CTX_HASH, "tokens": TOKENS}
        assert call(system, host, "lookup", **lookup) is None
        (tmp / "blob").write_bytes(BLOB)  # blobs travel as files, never in messages
        meta = RowMeta(fingerprint=FINGERPRINT, quant=QUANT, ctx_hash=CTX_HASH, tokens=TOKENS, context_size=4096)
        saved = call(system, host, "save", reason="cold", meta=meta, kv_path=str(tmp / "blob"), tier="disk")
        assert saved.accepted, saved
        deadline = time.monotonic() + 10  # saves are asynchronous: wait until the row is announced
        while not call(system, host, "known", key=saved.key) and time.monotonic() < deadline:
            time.sleep(0.01)
        hit = call(system, host, "lookup", **lookup)
        assert hit is not None and hit.kind == "exact", hit
        out = call(system, host, "load", hit=hit, out_path=str(tmp / "out"))
        assert Path(out["path"]).read_bytes() == BLOB
        print(f"saved and loaded {BLOB!r} through the actor system on port {system.port}")
        return admin.get_counters()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="cache smoke test (no model)")
    ap.add_argument("--actors", action="store_true", help="run through a thespian actor system")
    ap.add_argument("--port", type=int, default=None, help="admin port for --actors (default: a free port)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cache-smoke-") as d:
        tmp = Path(d)
        config = CacheConfig.create(tmp / "run", ram=None, disk=(tmp / "kvc", 1 << 30), default_tier="disk")
        counters = run_actors(config, tmp, args.port) if args.actors else run_plain(config)
    shown = {k: v for k, v in counters.items() if v and not k.endswith(("_ns_total", "_capacity"))}
    print(json.dumps(shown, indent=2))
    ok = (counters["saves_cold"], counters["misses"], counters["hits_exact"]) == (1, 1, 1)
    print("OK: one save, one miss, one exact hit" if ok else "UNEXPECTED COUNTERS")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
