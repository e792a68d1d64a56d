"""All benchmarks in one run: a JSON report on stdout and in bench/out/, plus PNG plots.

Sections run one after another in this process so every ratio compares numbers
taken on the same machine, minutes apart. `--smoke` shrinks every size so CI
can prove the harness still works; its figures are not meant to be quoted.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "bench"))


def machine() -> dict[str, Any]:
    import psutil

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    return {"cpu": model, "cores": psutil.cpu_count(logical=True), "memory_gb": memory_gb,
            "python": platform.python_version(), "platform": platform.platform()}


def run_cache(smoke: bool) -> dict[str, Any]:
    script = ROOT / "bench" / "cache_bench.py"
    small = ["--rows", "500", "--prompt-tokens", "2048", "--blob-mb", "4", "--lookup-reps", "20", "--load-reps", "2"]
    cmd = [sys.executable, str(script), *(small if smoke else [])]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def plot_native(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nat = report["native"]
    labels = ["prefill (pp)", "decode (tg)"]
    ref = [nat["llama_bench"]["pp"]["median"], nat["llama_bench"]["tg"]["median"]]
    ours = [nat["binding"]["pp"]["median"], nat["binding"]["tg"]["median"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], ref, width=0.4, label="llama-bench")
    ax.bar([i + 0.2 for i in x], ours, width=0.4, label="llama-actors binding")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("tokens / s")
    ax.set_title(f"{nat['model']}, {nat['threads']} threads")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    ap.add_argument("--compare-flags", action="store_true", help="also build an AVX2-only llama.cpp and compare")
    args = ap.parse_args()
    import native_bench

    OUT.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"smoke": args.smoke, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "machine": machine()}
    report["native"] = native_bench.run(args.smoke, args.compare_flags)
    if (ROOT / "bench" / "cache_bench.py").exists():
        report["cache"] = run_cache(args.smoke)
    plot_native(report, OUT / "native.png")
    (OUT / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"\nwrote {OUT / 'report.json'} and {OUT / 'native.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
