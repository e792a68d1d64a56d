// llama-actors native shim. See la_shim.h for the contract.
//
// Rules kept throughout this file:
//  * every exported function is noexcept and wraps its body in guarded(), so a
//    C++ exception becomes LA_E_EXCEPTION / LA_E_NO_MEMORY, never an unwind
//    into Python;
//  * every argument that indexes llama.cpp state (sequence ids, token ids,
//    positions, batch sizes) is checked here before llama.cpp sees it, because
//    llama.cpp answers many of those with GGML_ASSERT, i.e. abort();
//  * one mutex per handle; lock order is context -> sampler/adapter -> model.

#include "la_shim.h"

#include "ggml-backend.h"
#include "ggml.h"
#include "gguf.h"
#include "llama.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace {

thread_local std::string g_last_error;
thread_local bool g_last_printed = false;
thread_local bool g_last_was_error = false;
std::atomic<int> g_log_level{GGML_LOG_LEVEL_WARN};
std::once_flag g_init_once;

void log_callback(enum ggml_log_level level, const char * text, void *) {
    if (text == nullptr) {
        return;
    }
    if (level == GGML_LOG_LEVEL_CONT) {
        if (g_last_was_error && g_last_error.size() < 4096) {
            g_last_error.append(text);
        }
        if (g_last_printed) {
            std::fputs(text, stderr);
        }
        return;
    }
    // Error lines accumulate (callers clear before a call) because llama.cpp
    // often logs the specific cause first and a generic failure line last.
    g_last_was_error = level == GGML_LOG_LEVEL_ERROR;
    if (g_last_was_error && g_last_error.size() < 4096) {
        g_last_error.append(text);
    }
    int threshold = g_log_level.load(std::memory_order_relaxed);
    g_last_printed = threshold > 0 && static_cast<int>(level) >= threshold;
    if (g_last_printed) {
        std::fputs(text, stderr);
    }
}

template <class F> int32_t guarded(F && body) noexcept {
    try {
        return body();
    } catch (const std::bad_alloc &) {
        return LA_E_NO_MEMORY;
    } catch (const std::exception & e) {
        try {
            g_last_error.assign(e.what());
        } catch (...) {
        }
        return LA_E_EXCEPTION;
    } catch (...) {
        return LA_E_EXCEPTION;
    }
}

int32_t copy_out(const std::string & s, char * buf, int32_t cap, int32_t * n_out) {
    if (n_out) {
        *n_out = static_cast<int32_t>(s.size());
    }
    if (buf == nullptr || cap < static_cast<int32_t>(s.size())) {
        return LA_E_BUFFER_TOO_SMALL;
    }
    std::memcpy(buf, s.data(), s.size());
    return LA_OK;
}

}  // namespace

// ---------------------------------------------------------------- handles

struct la_model {
    std::mutex mu;
    llama_model * model = nullptr;
    const llama_vocab * vocab = nullptr;
    int32_t n_vocab = 0;
    int children = 0;  // contexts, samplers and adapters that keep `model` alive
    bool closed = false;
    bool dropped = false;
    bool vocab_only = false;
};

struct la_adapter {
    std::mutex mu;
    la_model * owner = nullptr;
    llama_adapter_lora * lora = nullptr;
    int attached = 0;  // contexts that currently apply this adapter
    bool closed = false;
    bool dropped = false;
};

struct la_sampler {
    std::mutex mu;
    la_model * owner = nullptr;
    llama_sampler * chain = nullptr;
    bool closed = false;
};

struct la_context {
    std::mutex mu;
    la_model * owner = nullptr;
    llama_context * ctx = nullptr;
    const llama_vocab * vocab = nullptr;
    int32_t n_vocab = 0;
    int32_t n_embd = 0;
    uint32_t n_batch = 0;
    uint32_t n_seq_max = 0;
    uint32_t n_ctx_seq = 0;
    bool embeddings = false;
    llama_batch batch{};
    bool has_batch = false;
    // Logits of the last decoded position per sequence, copied out of llama.cpp
    // so that they survive later decodes of other sequences and can be saved
    // with a cache row (an exact cache hit then needs no decode at all).
    std::vector<std::vector<float>> logits;
    std::vector<char> has_logits;
    std::vector<llama_token_data> cur;
    std::vector<la_adapter *> attached;
    bool closed = false;
    // Bounded decodes: read by llama.cpp's abort callback (graph thread 0) while a decode runs,
    // written by la_abort from any thread without the lock, hence atomics.
    int32_t budget_ms = 0;                   // per decode; 0: unbounded (under mu)
    std::atomic<int64_t> deadline_ns{0};     // steady clock; 0: none
    std::atomic<bool> abort_flag{false};
    std::atomic<int32_t> hold_ms{0};         // test hook
};

namespace {

// Caller holds m->mu.
void model_maybe_free_locked(la_model * m) {
    if (m->closed && m->children == 0 && m->model != nullptr) {
        llama_model_free(m->model);
        m->model = nullptr;
        m->vocab = nullptr;
    }
}

void model_release_child(la_model * m) {
    bool destroy = false;
    {
        std::lock_guard<std::mutex> lock(m->mu);
        m->children--;
        model_maybe_free_locked(m);
        destroy = m->dropped && m->children == 0;
    }
    if (destroy) {
        delete m;
    }
}

// Acquire a child reference on an open model. Returns false if it is closed.
bool model_add_child(la_model * m) {
    std::lock_guard<std::mutex> lock(m->mu);
    if (m->closed || m->model == nullptr) {
        return false;
    }
    m->children++;
    return true;
}

// The one way a child handle (context, sampler, adapter) is born: take a
// reference on the open model, let `build` make the llama.cpp resource (it
// stores what it made in `res` before it can fail, so a half-built resource is
// freed too), then wrap it in a new Handle with `adopt`. A failure status or an
// exception at any step rolls back in reverse order: handle, resource, model
// reference. Exceptions are rethrown for guarded() to turn into a status.
template <class Handle, class Resource, class Build, class Adopt>
int32_t new_child(la_model * m, void (*free_res)(Resource *), Build && build, Adopt && adopt, Handle ** out) {
    if (!model_add_child(m)) {
        return LA_E_RELEASED;
    }
    Resource * res = nullptr;
    Handle * h = nullptr;
    auto roll_back = [&] {
        delete h;
        if (res != nullptr) {
            free_res(res);
        }
        model_release_child(m);
    };
    try {
        const int32_t rc = build(res);
        if (rc != LA_OK) {
            roll_back();
            return rc;
        }
        h = new Handle();
        h->owner = m;
        adopt(h, res);
    } catch (...) {
        roll_back();
        throw;
    }
    *out = h;
    return static_cast<int32_t>(LA_OK);
}

// Caller holds a->mu. Returns true when the adapter's model reference must be released.
bool adapter_maybe_free_locked(la_adapter * a) {
    if (a->closed && a->attached == 0 && a->lora != nullptr) {
        llama_adapter_lora_free(a->lora);
        a->lora = nullptr;
        return true;
    }
    return false;
}

void adapter_detach(la_adapter * a) {
    bool release = false;
    bool destroy = false;
    la_model * owner = nullptr;
    {
        std::lock_guard<std::mutex> lock(a->mu);
        a->attached--;
        release = adapter_maybe_free_locked(a);
        owner = a->owner;
        destroy = a->dropped && a->attached == 0;
    }
    if (release) {
        model_release_child(owner);
    }
    if (destroy) {
        delete a;
    }
}

bool valid_token(int32_t n_vocab, int32_t t) { return t >= 0 && t < n_vocab; }

bool valid_seq(const la_context * c, int32_t seq) { return seq >= 0 && static_cast<uint32_t>(seq) < c->n_seq_max; }

llama_pos next_pos(la_context * c, int32_t seq) {
    return llama_memory_seq_pos_max(llama_get_memory(c->ctx), seq) + 1;
}

void batch_add(llama_batch & b, llama_token t, llama_pos pos, llama_seq_id seq, bool logits) {
    const int i = b.n_tokens;
    b.token[i] = t;
    b.pos[i] = pos;
    b.n_seq_id[i] = 1;
    b.seq_id[i][0] = seq;
    b.logits[i] = logits ? 1 : 0;
    b.n_tokens++;
}

int64_t steady_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch()).count();
}

bool past_deadline(const la_context * c) {
    const int64_t d = c->deadline_ns.load();
    return d != 0 && steady_ns() >= d;
}

// llama.cpp's abort callback: true ends the decode in flight (llama_decode returns 2).
bool abort_check(void * data) {
    auto * c = static_cast<la_context *>(data);
    const int32_t hold = c->hold_ms.exchange(0);
    if (hold > 0) {  // test hook: a slow graph node, cut short by the budget or an abort
        const int64_t until = steady_ns() + static_cast<int64_t>(hold) * 1000000;
        while (steady_ns() < until && !c->abort_flag.load() && !past_deadline(c)) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
    return c->abort_flag.load() || past_deadline(c);
}

// Caller holds c->mu.
int32_t run_decode(la_context * c) {
    c->deadline_ns.store(c->budget_ms > 0 ? steady_ns() + static_cast<int64_t>(c->budget_ms) * 1000000 : 0);
    const int32_t rc = llama_decode(c->ctx, c->batch);
    const bool timed_out = past_deadline(c);
    c->deadline_ns.store(0);
    if (rc == 0) {
        return LA_OK;
    }
    if (rc == 2) {  // aborted: by la_abort (the flag is consumed) or by the budget
        return c->abort_flag.exchange(false) || !timed_out ? LA_E_ABORTED : LA_E_DECODE_TIMEOUT;
    }
    return rc == 1 ? LA_E_KV_FULL : LA_E_DECODE_FAILED;
}

void keep_logits(la_context * c, int32_t seq, int32_t batch_index) {
    const float * src = llama_get_logits_ith(c->ctx, batch_index);
    auto & dst = c->logits[seq];
    if (src == nullptr) {
        c->has_logits[seq] = 0;
        return;
    }
    dst.assign(src, src + c->n_vocab);
    c->has_logits[seq] = 1;
}

// Sample a token for `seq` from its kept logits with `s` (caller holds c->mu).
int32_t sample_locked(la_context * c, int32_t seq, la_sampler * s, int32_t * token) {
    std::lock_guard<std::mutex> lock(s->mu);
    if (s->closed || s->chain == nullptr) {
        return LA_E_RELEASED;
    }
    if (!c->has_logits[seq]) {
        return LA_E_NO_LOGITS;
    }
    const auto & lg = c->logits[seq];
    c->cur.resize(c->n_vocab);
    for (int32_t i = 0; i < c->n_vocab; i++) {
        c->cur[i] = llama_token_data{i, lg[i], 0.0f};
    }
    llama_token_data_array arr{c->cur.data(), c->cur.size(), -1, false};
    llama_sampler_apply(s->chain, &arr);
    if (arr.selected < 0 || arr.selected >= static_cast<int64_t>(arr.size)) {
        return LA_E_SAMPLER_FAILED;
    }
    const llama_token t = arr.data[arr.selected].id;
    llama_sampler_accept(s->chain, t);
    *token = t;
    return LA_OK;
}

int32_t context_open(la_context * c) { return (c == nullptr) ? LA_E_BAD_ARG : (c->closed ? LA_E_RELEASED : LA_OK); }

}  // namespace

// ---------------------------------------------------------------- process-wide

extern "C" void la_backend_init(void) {
    try {
        std::call_once(g_init_once, [] {
            llama_log_set(log_callback, nullptr);
            llama_backend_init();
        });
    } catch (...) {
    }
}

extern "C" void la_log_set_level(int32_t level) { g_log_level.store(level, std::memory_order_relaxed); }

extern "C" int32_t la_last_error(char * buf, int32_t cap) {
    return guarded([&] {
        int32_t n = 0;
        copy_out(g_last_error, buf, cap, &n);
        return n;
    });
}

extern "C" int32_t la_max_devices(void) {
    return guarded([] { return static_cast<int32_t>(llama_max_devices()); });
}

extern "C" int32_t la_type_name(int32_t type, char * buf, int32_t cap) {
    return guarded([&] {
        if (type < 0 || type >= GGML_TYPE_COUNT) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        const char * name = ggml_type_name(static_cast<ggml_type>(type));
        int32_t n = 0;
        return copy_out(name ? name : "", buf, cap, &n);
    });
}

// ---------------------------------------------------------------- model

extern "C" int32_t la_model_default_params(la_model_params * out) {
    return guarded([&] {
        if (out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        const llama_model_params p = llama_model_default_params();
        out->n_gpu_layers = p.n_gpu_layers;
        out->main_gpu = p.main_gpu;
        out->split_mode = static_cast<int32_t>(p.split_mode);
        out->tensor_split = nullptr;
        out->n_tensor_split = 0;
        out->load_mode = static_cast<int32_t>(p.load_mode);
        out->vocab_only = p.vocab_only;
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_model_load(const char * path, const la_model_params * params, la_model ** out) {
    return guarded([&] {
        if (path == nullptr || params == nullptr || out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        *out = nullptr;
        la_backend_init();
        g_last_error.clear();
        FILE * f = std::fopen(path, "rb");
        if (f == nullptr) {
            return static_cast<int32_t>(LA_E_NOT_FOUND);
        }
        std::fclose(f);
        // Parse the GGUF container alone first: a file that is not GGUF at all
        // (truncated header, random bytes) is told apart from a GGUF llama.cpp
        // cannot build a model from.
        gguf_init_params gp{true, nullptr};
        gguf_context * g = gguf_init_from_file(path, gp);
        if (g == nullptr) {
            return static_cast<int32_t>(LA_E_MALFORMED_GGUF);
        }
        gguf_free(g);

        const size_t max_dev = llama_max_devices();
        if (params->n_tensor_split < 0 || static_cast<size_t>(params->n_tensor_split) > max_dev ||
            (params->n_tensor_split > 0 && params->tensor_split == nullptr)) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        if (params->load_mode < LLAMA_LOAD_MODE_AUTO || params->load_mode > LLAMA_LOAD_MODE_DIRECT_IO) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        if (params->split_mode < LLAMA_SPLIT_MODE_NONE || params->split_mode > LLAMA_SPLIT_MODE_ROW) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        std::vector<float> split(max_dev, 0.0f);
        for (int32_t i = 0; i < params->n_tensor_split; i++) {
            split[i] = params->tensor_split[i];
        }
        llama_model_params mp = llama_model_default_params();
        mp.n_gpu_layers = params->n_gpu_layers;
        mp.main_gpu = params->main_gpu;
        mp.split_mode = static_cast<llama_split_mode>(params->split_mode);
        mp.tensor_split = params->n_tensor_split > 0 ? split.data() : nullptr;
        mp.load_mode = static_cast<llama_load_mode>(params->load_mode);
        mp.vocab_only = params->vocab_only;

        llama_model * lm = llama_model_load_from_file(path, mp);
        if (lm == nullptr) {
            return static_cast<int32_t>(LA_E_LOAD_FAILED);
        }
        auto * m = new (std::nothrow) la_model();
        if (m == nullptr) {
            llama_model_free(lm);
            return static_cast<int32_t>(LA_E_NO_MEMORY);
        }
        m->model = lm;
        m->vocab = llama_model_get_vocab(lm);
        m->n_vocab = llama_vocab_n_tokens(m->vocab);
        m->vocab_only = params->vocab_only;
        *out = m;
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_model_close(la_model * m) {
    return guarded([&] {
        if (m == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        std::lock_guard<std::mutex> lock(m->mu);
        if (m->closed) {
            return static_cast<int32_t>(LA_E_RELEASED);
        }
        m->closed = true;
        model_maybe_free_locked(m);
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" void la_model_drop(la_model * m) {
    guarded([&] {
        if (m == nullptr) {
            return 0;
        }
        bool destroy = false;
        {
            std::lock_guard<std::mutex> lock(m->mu);
            m->closed = true;
            m->dropped = true;
            model_maybe_free_locked(m);
            destroy = m->children == 0;
        }
        if (destroy) {
            delete m;
        }
        return 0;
    });
}

#define LA_LOCK_MODEL(m)                                   \
    if ((m) == nullptr) return static_cast<int32_t>(LA_E_BAD_ARG); \
    std::lock_guard<std::mutex> model_lock((m)->mu);       \
    if ((m)->closed || (m)->model == nullptr) return static_cast<int32_t>(LA_E_RELEASED)

extern "C" int32_t la_model_info_get(la_model * m, la_model_info * out) {
    return guarded([&] {
        LA_LOCK_MODEL(m);
        if (out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        out->size_bytes = llama_model_size(m->model);
        out->n_params = llama_model_n_params(m->model);
        out->n_layer = llama_model_n_layer(m->model);
        out->n_ctx_train = llama_model_n_ctx_train(m->model);
        out->n_embd = llama_model_n_embd(m->model);
        out->n_vocab = m->n_vocab;
        out->ftype = static_cast<int32_t>(llama_model_ftype(m->model));
        out->token_bos = llama_vocab_bos(m->vocab);
        out->token_eos = llama_vocab_eos(m->vocab);
        out->has_chat_template = llama_model_chat_template(m->model, nullptr) != nullptr;
        out->vocab_only = m->vocab_only;
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_model_desc(la_model * m, char * buf, int32_t cap, int32_t * n_out) {
    return guarded([&] {
        LA_LOCK_MODEL(m);
        char tmp[256];
        const int32_t n = llama_model_desc(m->model, tmp, sizeof(tmp));
        return copy_out(std::string(tmp, n > 0 ? static_cast<size_t>(n) : 0), buf, cap, n_out);
    });
}

extern "C" int32_t la_model_meta(la_model * m, const char * key, char * buf, int32_t cap, int32_t * n_out) {
    return guarded([&] {
        LA_LOCK_MODEL(m);
        if (key == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        const int32_t need = llama_model_meta_val_str(m->model, key, nullptr, 0);
        if (need < 0) {
            return static_cast<int32_t>(LA_E_NOT_FOUND);
        }
        std::string val(static_cast<size_t>(need) + 1, '\0');
        llama_model_meta_val_str(m->model, key, val.data(), val.size());
        val.resize(need);
        return copy_out(val, buf, cap, n_out);
    });
}

extern "C" int32_t la_model_chat_template(la_model * m, char * buf, int32_t cap, int32_t * n_out) {
    return guarded([&] {
        LA_LOCK_MODEL(m);
        const char * t = llama_model_chat_template(m->model, nullptr);
        if (t == nullptr) {
            return static_cast<int32_t>(LA_E_NO_TEMPLATE);
        }
        return copy_out(t, buf, cap, n_out);
    });
}

extern "C" int32_t la_tokenize(la_model * m, const char * text, int32_t len, bool add_special, bool parse_special,
                               int32_t * out, int32_t cap, int32_t * n_out) {
    return guarded([&] {
        LA_LOCK_MODEL(m);
        if (text == nullptr || len < 0 || n_out == nullptr || cap < 0) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        const int32_t n = llama_tokenize(m->vocab, text, len, out, cap, add_special, parse_special);
        if (n == INT32_MIN) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        if (n < 0) {
            *n_out = -n;
            return static_cast<int32_t>(LA_E_BUFFER_TOO_SMALL);
        }
        *n_out = n;
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_detokenize(la_model * m, const int32_t * tokens, int32_t n, bool remove_special,
                                 bool unparse_special, char * buf, int32_t cap, int32_t * n_out) {
    return guarded([&] {
        LA_LOCK_MODEL(m);
        if ((tokens == nullptr && n > 0) || n < 0 || n_out == nullptr || cap < 0) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        for (int32_t i = 0; i < n; i++) {
            if (!valid_token(m->n_vocab, tokens[i])) {
                return static_cast<int32_t>(LA_E_BAD_TOKEN);
            }
        }
        const int32_t r = llama_detokenize(m->vocab, tokens, n, buf, cap, remove_special, unparse_special);
        if (r < 0) {
            *n_out = -r;
            return static_cast<int32_t>(LA_E_BUFFER_TOO_SMALL);
        }
        *n_out = r;
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_token_to_piece(la_model * m, int32_t token, bool special, char * buf, int32_t cap,
                                     int32_t * n_out) {
    return guarded([&] {
        LA_LOCK_MODEL(m);
        if (n_out == nullptr || cap < 0) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        if (!valid_token(m->n_vocab, token)) {
            return static_cast<int32_t>(LA_E_BAD_TOKEN);
        }
        const int32_t r = llama_token_to_piece(m->vocab, token, buf, cap, 0, special);
        if (r < 0) {
            *n_out = -r;
            return static_cast<int32_t>(LA_E_BUFFER_TOO_SMALL);
        }
        *n_out = r;
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_token_is_eog(la_model * m, int32_t token, bool * out) {
    return guarded([&] {
        LA_LOCK_MODEL(m);
        if (out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        if (!valid_token(m->n_vocab, token)) {
            return static_cast<int32_t>(LA_E_BAD_TOKEN);
        }
        *out = llama_vocab_is_eog(m->vocab, token);
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_vocab_specials(la_model * m, int32_t * ids, int32_t * attrs, int32_t cap, int32_t * n_out) {
    return guarded([&] {
        LA_LOCK_MODEL(m);
        if (n_out == nullptr || cap < 0 || (cap > 0 && (ids == nullptr || attrs == nullptr))) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        const int32_t split_on = LLAMA_TOKEN_ATTR_CONTROL | LLAMA_TOKEN_ATTR_USER_DEFINED | LLAMA_TOKEN_ATTR_UNKNOWN;
        int32_t n = 0;
        for (int32_t id = 0; id < m->n_vocab; ++id) {
            const int32_t attr = static_cast<int32_t>(llama_vocab_get_attr(m->vocab, id));
            if ((attr & split_on) == 0) {
                continue;
            }
            if (n < cap) {
                ids[n] = id;
                attrs[n] = attr;
            }
            ++n;
        }
        *n_out = n;
        return static_cast<int32_t>(n > cap ? LA_E_BUFFER_TOO_SMALL : LA_OK);
    });
}

extern "C" int32_t la_vocab_text(la_model * m, int32_t token, char * buf, int32_t cap, int32_t * n_out) {
    return guarded([&] {
        LA_LOCK_MODEL(m);
        if (n_out == nullptr || cap < 0 || (cap > 0 && buf == nullptr)) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        if (!valid_token(m->n_vocab, token)) {
            return static_cast<int32_t>(LA_E_BAD_TOKEN);
        }
        const char * text = llama_vocab_get_text(m->vocab, token);
        const size_t len = text != nullptr ? std::strlen(text) : 0;
        *n_out = static_cast<int32_t>(len);
        if (len > static_cast<size_t>(cap)) {
            return static_cast<int32_t>(LA_E_BUFFER_TOO_SMALL);
        }
        if (len > 0) {
            std::memcpy(buf, text, len);
        }
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_vocab_kind(la_model * m, int32_t * type, bool * add_bos, bool * add_eos, bool * add_sep) {
    return guarded([&] {
        LA_LOCK_MODEL(m);
        if (type == nullptr || add_bos == nullptr || add_eos == nullptr || add_sep == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        *type = static_cast<int32_t>(llama_vocab_type(m->vocab));
        *add_bos = llama_vocab_get_add_bos(m->vocab);
        *add_eos = llama_vocab_get_add_eos(m->vocab);
        *add_sep = llama_vocab_get_add_sep(m->vocab);
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_chat_apply_template(la_model * m, const char * tmpl, const char ** roles,
                                          const char ** contents, int32_t n_msg, bool add_assistant, char * buf,
                                          int32_t cap, int32_t * n_out) {
    return guarded([&] {
        LA_LOCK_MODEL(m);
        if (n_msg < 0 || (n_msg > 0 && (roles == nullptr || contents == nullptr)) || n_out == nullptr || cap < 0) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        const char * t = tmpl != nullptr ? tmpl : llama_model_chat_template(m->model, nullptr);
        if (t == nullptr) {
            return static_cast<int32_t>(LA_E_NO_TEMPLATE);
        }
        std::vector<llama_chat_message> msgs(static_cast<size_t>(n_msg));
        for (int32_t i = 0; i < n_msg; i++) {
            if (roles[i] == nullptr || contents[i] == nullptr) {
                return static_cast<int32_t>(LA_E_BAD_ARG);
            }
            msgs[i] = llama_chat_message{roles[i], contents[i]};
        }
        const int32_t r = llama_chat_apply_template(t, msgs.data(), msgs.size(), add_assistant, buf, cap);
        if (r < 0) {
            return static_cast<int32_t>(LA_E_TEMPLATE);
        }
        *n_out = r;
        return static_cast<int32_t>(r > cap ? LA_E_BUFFER_TOO_SMALL : LA_OK);
    });
}

// ---------------------------------------------------------------- context

extern "C" int32_t la_context_default_params(la_context_params * out) {
    return guarded([&] {
        if (out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        const llama_context_params p = llama_context_default_params();
        out->n_ctx = p.n_ctx;
        out->n_batch = p.n_batch;
        out->n_ubatch = p.n_ubatch;
        out->n_seq_max = p.n_seq_max;
        out->n_threads = p.n_threads;
        out->n_threads_batch = p.n_threads_batch;
        out->embeddings = p.embeddings;
        out->offload_kqv = p.offload_kqv;
        out->kv_unified = p.kv_unified;
        out->flash_attn = static_cast<int32_t>(p.flash_attn_type);
        out->type_k = static_cast<int32_t>(p.type_k);
        out->type_v = static_cast<int32_t>(p.type_v);
        out->pooling = static_cast<int32_t>(p.pooling_type);
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_context_new(la_model * m, const la_context_params * params, la_context ** out) {
    return guarded([&] {
        if (m == nullptr || params == nullptr || out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        *out = nullptr;
        if (params->n_seq_max == 0 || params->n_seq_max > 256 || params->n_batch == 0 || params->n_ubatch == 0 ||
            params->n_threads <= 0 || params->n_threads_batch <= 0 || params->type_k < 0 ||
            params->type_k >= GGML_TYPE_COUNT || params->type_v < 0 || params->type_v >= GGML_TYPE_COUNT ||
            params->flash_attn < -1 || params->flash_attn > 1) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = params->n_ctx;
        cp.n_batch = params->n_batch;
        cp.n_ubatch = params->n_ubatch;
        cp.n_seq_max = params->n_seq_max;
        cp.n_threads = params->n_threads;
        cp.n_threads_batch = params->n_threads_batch;
        cp.embeddings = params->embeddings;
        cp.offload_kqv = params->offload_kqv;
        cp.kv_unified = params->kv_unified;
        cp.flash_attn_type = static_cast<llama_flash_attn_type>(params->flash_attn);
        cp.type_k = static_cast<ggml_type>(params->type_k);
        cp.type_v = static_cast<ggml_type>(params->type_v);
        cp.pooling_type = static_cast<enum llama_pooling_type>(params->pooling);
        auto build = [&](llama_context *& lc) {
            if (m->vocab_only) {
                return static_cast<int32_t>(LA_E_BAD_ARG);
            }
            try {
                lc = llama_init_from_model(m->model, cp);
            } catch (...) {
                lc = nullptr;
            }
            return static_cast<int32_t>(lc == nullptr ? LA_E_CONTEXT_FAILED : LA_OK);
        };
        auto adopt = [&](la_context * c, llama_context * lc) {
            c->vocab = m->vocab;
            c->n_vocab = m->n_vocab;
            c->n_embd = llama_model_n_embd(m->model);
            c->n_batch = llama_n_batch(lc);
            c->n_seq_max = llama_n_seq_max(lc);
            c->n_ctx_seq = llama_n_ctx_seq(lc);
            c->embeddings = params->embeddings;
            c->logits.resize(c->n_seq_max);
            c->has_logits.assign(c->n_seq_max, 0);
            // Last: nothing after it can throw, so the batch never leaks.
            c->batch = llama_batch_init(static_cast<int32_t>(c->n_batch), 0, 1);
            c->has_batch = true;
            c->ctx = lc;
            llama_set_abort_callback(lc, abort_check, c);
        };
        return new_child(m, llama_free, build, adopt, out);
    });
}

namespace {
// Release llama.cpp resources of a context; caller holds c->mu and has checked !closed.
void context_release_locked(la_context * c, std::vector<la_adapter *> & detach) {
    if (c->has_batch) {
        llama_batch_free(c->batch);
        c->has_batch = false;
    }
    if (c->ctx != nullptr) {
        llama_free(c->ctx);
        c->ctx = nullptr;
    }
    detach.swap(c->attached);
    c->logits.clear();
    c->has_logits.clear();
    c->closed = true;
}
}  // namespace

extern "C" int32_t la_context_close(la_context * c) {
    return guarded([&] {
        if (c == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        std::vector<la_adapter *> detach;
        {
            std::lock_guard<std::mutex> lock(c->mu);
            if (c->closed) {
                return static_cast<int32_t>(LA_E_RELEASED);
            }
            context_release_locked(c, detach);
        }
        for (la_adapter * a : detach) {
            adapter_detach(a);
        }
        model_release_child(c->owner);
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" void la_context_drop(la_context * c) {
    if (c == nullptr) {
        return;
    }
    la_context_close(c);
    delete c;
}

extern "C" int32_t la_context_info_get(la_context * c, la_context_info * out) {
    return guarded([&] {
        if (c == nullptr || out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        std::lock_guard<std::mutex> lock(c->mu);
        if (int32_t rc = context_open(c)) {
            return rc;
        }
        out->n_ctx = llama_n_ctx(c->ctx);
        out->n_ctx_seq = c->n_ctx_seq;
        out->n_batch = c->n_batch;
        out->n_ubatch = llama_n_ubatch(c->ctx);
        out->n_seq_max = c->n_seq_max;
        out->n_threads = llama_n_threads(c->ctx);
        out->n_threads_batch = llama_n_threads_batch(c->ctx);
        out->pooling = static_cast<int32_t>(llama_pooling_type(c->ctx));
        out->embeddings = c->embeddings;
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_set_threads(la_context * c, int32_t n_threads, int32_t n_threads_batch) {
    return guarded([&] {
        if (c == nullptr || n_threads <= 0 || n_threads_batch <= 0) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        std::lock_guard<std::mutex> lock(c->mu);
        if (int32_t rc = context_open(c)) {
            return rc;
        }
        llama_set_n_threads(c->ctx, n_threads, n_threads_batch);
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_set_decode_budget(la_context * c, int32_t budget_ms) {
    return guarded([&] {
        if (c == nullptr || budget_ms < 0) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        std::lock_guard<std::mutex> lock(c->mu);
        if (int32_t rc = context_open(c)) {
            return rc;
        }
        c->budget_ms = budget_ms;
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_abort(la_context * c, bool on) {
    if (c == nullptr) {
        return LA_E_BAD_ARG;
    }
    c->abort_flag.store(on);  // no lock: the decode to stop holds it
    return LA_OK;
}

extern "C" int32_t la_debug_hold_decode(la_context * c, int32_t ms) {
    if (c == nullptr || ms < 0) {
        return LA_E_BAD_ARG;
    }
    c->hold_ms.store(ms);
    return LA_OK;
}

extern "C" int32_t la_reset(la_context * c) {
    return guarded([&] {
        if (c == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        std::lock_guard<std::mutex> lock(c->mu);
        if (int32_t rc = context_open(c)) {
            return rc;
        }
        llama_memory_clear(llama_get_memory(c->ctx), true);
        std::fill(c->has_logits.begin(), c->has_logits.end(), 0);
        c->abort_flag.store(false);
        return static_cast<int32_t>(LA_OK);
    });
}

#define LA_LOCK_CTX_SEQ(c, seq)                                        \
    if ((c) == nullptr) return static_cast<int32_t>(LA_E_BAD_ARG);     \
    std::lock_guard<std::mutex> ctx_lock((c)->mu);                     \
    if ((c)->closed) return static_cast<int32_t>(LA_E_RELEASED);       \
    if (!valid_seq((c), (seq))) return static_cast<int32_t>(LA_E_BAD_SEQ)

extern "C" int32_t la_seq_pos_max(la_context * c, int32_t seq, int32_t * out) {
    return guarded([&] {
        LA_LOCK_CTX_SEQ(c, seq);
        if (out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        *out = llama_memory_seq_pos_max(llama_get_memory(c->ctx), seq);
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_seq_rm(la_context * c, int32_t seq, int32_t p0, int32_t p1) {
    return guarded([&] {
        LA_LOCK_CTX_SEQ(c, seq);
        c->has_logits[seq] = 0;
        if (!llama_memory_seq_rm(llama_get_memory(c->ctx), seq, p0, p1)) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_seq_has_logits(la_context * c, int32_t seq, bool * out) {
    return guarded([&] {
        LA_LOCK_CTX_SEQ(c, seq);
        if (out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        *out = c->has_logits[seq] != 0;
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_step(la_context * c, const la_step_row * rows, int32_t n_rows, la_step_result * out) {
    return guarded([&] {
        if (c == nullptr || rows == nullptr || out == nullptr || n_rows <= 0) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        std::lock_guard<std::mutex> lock(c->mu);
        if (c->closed) {
            return static_cast<int32_t>(LA_E_RELEASED);
        }
        // Validate the whole tick before touching any state.
        std::vector<char> seen(c->n_seq_max, 0);
        int64_t total = 0;
        for (int32_t r = 0; r < n_rows; r++) {
            const la_step_row & row = rows[r];
            if (!valid_seq(c, row.seq)) {
                return static_cast<int32_t>(LA_E_BAD_SEQ);
            }
            if (seen[row.seq]) {
                return static_cast<int32_t>(LA_E_BAD_ARG);
            }
            seen[row.seq] = 1;
            int64_t adds = 0;
            if (row.kind == 0) {
                if (row.n_tokens <= 0 || row.tokens == nullptr) {
                    return static_cast<int32_t>(LA_E_BAD_ARG);
                }
                for (int32_t i = 0; i < row.n_tokens; i++) {
                    if (!valid_token(c->n_vocab, row.tokens[i])) {
                        return static_cast<int32_t>(LA_E_BAD_TOKEN);
                    }
                }
                adds = row.n_tokens;
            } else if (row.kind == 1) {
                if (row.sampler == nullptr) {
                    return static_cast<int32_t>(LA_E_BAD_ARG);
                }
                if (!c->has_logits[row.seq]) {
                    return static_cast<int32_t>(LA_E_NO_LOGITS);
                }
                adds = 1;
            } else {
                return static_cast<int32_t>(LA_E_BAD_ARG);
            }
            if (static_cast<int64_t>(next_pos(c, row.seq)) + adds > static_cast<int64_t>(c->n_ctx_seq)) {
                return static_cast<int32_t>(LA_E_CONTEXT_OVERFLOW);
            }
            total += adds;
        }
        if (total > static_cast<int64_t>(c->n_batch)) {
            return static_cast<int32_t>(LA_E_BATCH_OVERFLOW);
        }
        // Decode rows sample from the logits of the previous tick first, so the
        // token reported is the token that lands in KV by the time we return.
        std::vector<int32_t> out_index(static_cast<size_t>(n_rows), -1);
        c->batch.n_tokens = 0;
        for (int32_t r = 0; r < n_rows; r++) {
            const la_step_row & row = rows[r];
            out[r].seq = row.seq;
            out[r].kind = row.kind;
            out[r].token = -1;
            out[r].eog = false;
            if (row.kind != 1) {
                continue;
            }
            int32_t tok = -1;
            if (int32_t rc = sample_locked(c, row.seq, row.sampler, &tok)) {
                return rc;
            }
            c->has_logits[row.seq] = 0;
            out[r].token = tok;
            out[r].eog = llama_vocab_is_eog(c->vocab, tok);
            if (!out[r].eog) {
                out_index[r] = c->batch.n_tokens;
                batch_add(c->batch, tok, next_pos(c, row.seq), row.seq, true);
            }
        }
        for (int32_t r = 0; r < n_rows; r++) {
            const la_step_row & row = rows[r];
            if (row.kind != 0) {
                continue;
            }
            c->has_logits[row.seq] = 0;
            const llama_pos pos0 = next_pos(c, row.seq);
            for (int32_t i = 0; i < row.n_tokens; i++) {
                batch_add(c->batch, row.tokens[i], pos0 + i, row.seq, i == row.n_tokens - 1);
            }
            out_index[r] = c->batch.n_tokens - 1;
        }
        if (c->batch.n_tokens == 0) {
            return static_cast<int32_t>(LA_OK);
        }
        if (int32_t rc = run_decode(c)) {
            return rc;
        }
        for (int32_t r = 0; r < n_rows; r++) {
            if (out_index[r] >= 0) {
                keep_logits(c, rows[r].seq, out_index[r]);
            }
        }
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_sample(la_context * c, int32_t seq, la_sampler * s, int32_t * token, bool * eog) {
    return guarded([&] {
        if (token == nullptr || eog == nullptr || s == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        LA_LOCK_CTX_SEQ(c, seq);
        int32_t tok = -1;
        if (int32_t rc = sample_locked(c, seq, s, &tok)) {
            return rc;
        }
        c->has_logits[seq] = 0;
        *token = tok;
        *eog = llama_vocab_is_eog(c->vocab, tok);
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_get_logits(la_context * c, int32_t seq, float * out, int32_t cap, int32_t * n_out) {
    return guarded([&] {
        LA_LOCK_CTX_SEQ(c, seq);
        if (n_out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        *n_out = c->n_vocab;
        if (!c->has_logits[seq]) {
            return static_cast<int32_t>(LA_E_NO_LOGITS);
        }
        if (out == nullptr || cap < c->n_vocab) {
            return static_cast<int32_t>(LA_E_BUFFER_TOO_SMALL);
        }
        std::memcpy(out, c->logits[seq].data(), sizeof(float) * static_cast<size_t>(c->n_vocab));
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_set_logits(la_context * c, int32_t seq, const float * logits, int32_t n) {
    return guarded([&] {
        LA_LOCK_CTX_SEQ(c, seq);
        if (logits == nullptr || n != c->n_vocab) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        c->logits[seq].assign(logits, logits + n);
        c->has_logits[seq] = 1;
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_kv_size(la_context * c, int32_t seq, size_t * out) {
    return guarded([&] {
        LA_LOCK_CTX_SEQ(c, seq);
        if (out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        *out = llama_state_seq_get_size(c->ctx, seq);
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_kv_pack(la_context * c, int32_t seq, uint8_t * buf, size_t cap, size_t * n_out) {
    return guarded([&] {
        LA_LOCK_CTX_SEQ(c, seq);
        if (n_out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        const size_t need = llama_state_seq_get_size(c->ctx, seq);
        *n_out = need;
        if (buf == nullptr || cap < need) {
            return static_cast<int32_t>(LA_E_BUFFER_TOO_SMALL);
        }
        const size_t wrote = llama_state_seq_get_data(c->ctx, buf, cap, seq);
        if (wrote == 0) {
            return static_cast<int32_t>(LA_E_EXCEPTION);
        }
        *n_out = wrote;
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_kv_unpack(la_context * c, int32_t seq, const uint8_t * buf, size_t n) {
    return guarded([&] {
        LA_LOCK_CTX_SEQ(c, seq);
        if (buf == nullptr || n == 0) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        c->has_logits[seq] = 0;
        llama_memory_t mem = llama_get_memory(c->ctx);
        llama_memory_seq_rm(mem, seq, -1, -1);
        size_t r = 0;
        try {
            r = llama_state_seq_set_data(c->ctx, buf, n, seq);
        } catch (...) {
            r = 0;
        }
        if (r == 0) {
            llama_memory_seq_rm(mem, seq, -1, -1);
            return static_cast<int32_t>(LA_E_UNPACK_FAILED);
        }
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_embed(la_context * c, int32_t seq, const int32_t * tokens, int32_t n, float * out, int32_t cap,
                            int32_t * n_out) {
    return guarded([&] {
        LA_LOCK_CTX_SEQ(c, seq);
        if (tokens == nullptr || n <= 0 || n_out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        *n_out = c->n_embd;
        if (!c->embeddings) {
            return static_cast<int32_t>(LA_E_NOT_EMBEDDINGS);
        }
        if (out == nullptr || cap < c->n_embd) {
            return static_cast<int32_t>(LA_E_BUFFER_TOO_SMALL);
        }
        for (int32_t i = 0; i < n; i++) {
            if (!valid_token(c->n_vocab, tokens[i])) {
                return static_cast<int32_t>(LA_E_BAD_TOKEN);
            }
        }
        if (static_cast<uint32_t>(n) > c->n_ctx_seq) {
            return static_cast<int32_t>(LA_E_CONTEXT_OVERFLOW);
        }
        // Pooling sees one ubatch per sequence, so the whole text must fit in one.
        if (static_cast<uint32_t>(n) > c->n_batch || static_cast<uint32_t>(n) > llama_n_ubatch(c->ctx)) {
            return static_cast<int32_t>(LA_E_BATCH_OVERFLOW);
        }
        llama_memory_t mem = llama_get_memory(c->ctx);
        llama_memory_seq_rm(mem, seq, -1, -1);
        c->has_logits[seq] = 0;
        c->batch.n_tokens = 0;
        for (int32_t i = 0; i < n; i++) {
            batch_add(c->batch, tokens[i], i, seq, true);
        }
        int32_t rc = run_decode(c);
        if (rc == LA_OK) {
            const float * e = nullptr;
            if (llama_pooling_type(c->ctx) != LLAMA_POOLING_TYPE_NONE) {
                e = llama_get_embeddings_seq(c->ctx, seq);
            }
            if (e == nullptr) {
                e = llama_get_embeddings_ith(c->ctx, n - 1);
            }
            if (e == nullptr) {
                rc = LA_E_NOT_EMBEDDINGS;
            } else {
                std::memcpy(out, e, sizeof(float) * static_cast<size_t>(c->n_embd));
            }
        }
        llama_memory_seq_rm(mem, seq, -1, -1);
        return rc;
    });
}

extern "C" int32_t la_forward_argmax(la_context * c, int32_t seq, const int32_t * tokens, int32_t n, int32_t * out) {
    return guarded([&] {
        LA_LOCK_CTX_SEQ(c, seq);
        if (tokens == nullptr || n <= 0 || out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        for (int32_t i = 0; i < n; i++) {
            if (!valid_token(c->n_vocab, tokens[i])) {
                return static_cast<int32_t>(LA_E_BAD_TOKEN);
            }
        }
        if (static_cast<uint32_t>(n) > c->n_batch) {
            return static_cast<int32_t>(LA_E_BATCH_OVERFLOW);
        }
        const llama_pos pos0 = next_pos(c, seq);
        if (static_cast<int64_t>(pos0) + n > static_cast<int64_t>(c->n_ctx_seq)) {
            return static_cast<int32_t>(LA_E_CONTEXT_OVERFLOW);
        }
        c->has_logits[seq] = 0;
        c->batch.n_tokens = 0;
        for (int32_t i = 0; i < n; i++) {
            batch_add(c->batch, tokens[i], pos0 + i, seq, true);
        }
        if (int32_t rc = run_decode(c)) {
            return rc;
        }
        for (int32_t i = 0; i < n; i++) {
            const float * lg = llama_get_logits_ith(c->ctx, i);
            if (lg == nullptr) {
                return static_cast<int32_t>(LA_E_NO_LOGITS);
            }
            int32_t best = 0;
            for (int32_t t = 1; t < c->n_vocab; t++) {
                if (lg[t] > lg[best]) {
                    best = t;
                }
            }
            out[i] = best;
        }
        keep_logits(c, seq, n - 1);
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_set_adapters(la_context * c, la_adapter ** adapters, const float * scales, int32_t n) {
    return guarded([&] {
        if (c == nullptr || n < 0 || (n > 0 && (adapters == nullptr || scales == nullptr))) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        std::vector<la_adapter *> old;
        {
            std::lock_guard<std::mutex> lock(c->mu);
            if (c->closed) {
                return static_cast<int32_t>(LA_E_RELEASED);
            }
            std::vector<llama_adapter_lora *> loras;
            std::vector<la_adapter *> reserved;
            bool ok = true;
            for (int32_t i = 0; i < n && ok; i++) {
                la_adapter * a = adapters[i];
                if (a == nullptr || a->owner != c->owner) {
                    ok = false;
                    break;
                }
                std::lock_guard<std::mutex> al(a->mu);
                if (a->closed || a->lora == nullptr) {
                    ok = false;
                    break;
                }
                a->attached++;  // reserve: a concurrent close now defers the free
                reserved.push_back(a);
                loras.push_back(a->lora);
            }
            int32_t rc = LA_OK;
            if (!ok) {
                rc = LA_E_RELEASED;
            } else {
                std::vector<float> sc(scales, scales + n);
                if (llama_set_adapters_lora(c->ctx, loras.data(), loras.size(), sc.data()) != 0) {
                    rc = LA_E_ADAPTER_FAILED;
                }
            }
            if (rc != LA_OK) {
                for (la_adapter * a : reserved) {
                    adapter_detach(a);
                }
                return rc;
            }
            old.swap(c->attached);
            c->attached = reserved;
            for (auto & flag : c->has_logits) {
                flag = 0;  // logits computed under other adapters are stale
            }
        }
        for (la_adapter * a : old) {
            adapter_detach(a);
        }
        return static_cast<int32_t>(LA_OK);
    });
}

// ---------------------------------------------------------------- sampler

extern "C" int32_t la_sampler_new(la_model * m, const la_sampler_params * p, la_sampler ** out) {
    return guarded([&] {
        if (m == nullptr || p == nullptr || out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        *out = nullptr;
        if (p->n_bias < 0 || (p->n_bias > 0 && (p->bias_tokens == nullptr || p->bias_values == nullptr))) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        std::vector<llama_logit_bias> biases;
        biases.reserve(static_cast<size_t>(p->n_bias));
        for (int32_t i = 0; i < p->n_bias; i++) {
            if (p->bias_tokens[i] < 0 || p->bias_tokens[i] >= m->n_vocab) {
                return static_cast<int32_t>(LA_E_BAD_ARG);
            }
            biases.push_back(llama_logit_bias{p->bias_tokens[i], p->bias_values[i]});
        }
        auto build = [&](llama_sampler *& chain) {
            chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
            if (!biases.empty()) {
                llama_sampler_chain_add(chain, llama_sampler_init_logit_bias(m->n_vocab, static_cast<int32_t>(biases.size()),
                                                                             biases.data()));
            }
            if (p->grammar != nullptr && p->grammar[0] != '\0') {
                g_last_error.clear();
                llama_sampler * g = nullptr;
                try {
                    g = llama_sampler_init_grammar(m->vocab, p->grammar, p->grammar_root ? p->grammar_root : "root");
                } catch (...) {
                    g = nullptr;
                }
                if (g == nullptr) {
                    return static_cast<int32_t>(LA_E_GRAMMAR);
                }
                llama_sampler_chain_add(chain, g);
            }
            if (p->repeat_penalty != 1.0f) {
                llama_sampler_chain_add(chain, llama_sampler_init_penalties(m->n_vocab, p->repeat_last_n,
                                                                            p->repeat_penalty, 0.0f, 0.0f));
            }
            if (p->temperature > 0.0f) {
                if (p->top_k > 0) {
                    llama_sampler_chain_add(chain, llama_sampler_init_top_k(p->top_k));
                }
                if (p->top_p < 1.0f) {
                    llama_sampler_chain_add(chain, llama_sampler_init_top_p(p->top_p, 1));
                }
                if (p->min_p > 0.0f) {
                    llama_sampler_chain_add(chain, llama_sampler_init_min_p(p->min_p, 1));
                }
                llama_sampler_chain_add(chain, llama_sampler_init_temp(p->temperature));
                llama_sampler_chain_add(chain, llama_sampler_init_dist(p->seed));
            } else {
                llama_sampler_chain_add(chain, llama_sampler_init_greedy());
            }
            return static_cast<int32_t>(LA_OK);
        };
        auto adopt = [](la_sampler * s, llama_sampler * chain) { s->chain = chain; };
        return new_child(m, llama_sampler_free, build, adopt, out);
    });
}

extern "C" int32_t la_sampler_close(la_sampler * s) {
    return guarded([&] {
        if (s == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        {
            std::lock_guard<std::mutex> lock(s->mu);
            if (s->closed) {
                return static_cast<int32_t>(LA_E_RELEASED);
            }
            llama_sampler_free(s->chain);
            s->chain = nullptr;
            s->closed = true;
        }
        model_release_child(s->owner);
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" void la_sampler_drop(la_sampler * s) {
    if (s == nullptr) {
        return;
    }
    la_sampler_close(s);
    delete s;
}

extern "C" int32_t la_sampler_reset(la_sampler * s) {
    return guarded([&] {
        if (s == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        std::lock_guard<std::mutex> lock(s->mu);
        if (s->closed) {
            return static_cast<int32_t>(LA_E_RELEASED);
        }
        llama_sampler_reset(s->chain);
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" int32_t la_sampler_accept(la_sampler * s, int32_t token) {
    return guarded([&] {
        if (s == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        std::lock_guard<std::mutex> lock(s->mu);
        if (s->closed) {
            return static_cast<int32_t>(LA_E_RELEASED);
        }
        if (!valid_token(s->owner->n_vocab, token)) {
            return static_cast<int32_t>(LA_E_BAD_TOKEN);
        }
        llama_sampler_accept(s->chain, token);
        return static_cast<int32_t>(LA_OK);
    });
}

// ---------------------------------------------------------------- adapters

extern "C" int32_t la_adapter_load(la_model * m, const char * path, la_adapter ** out) {
    return guarded([&] {
        if (m == nullptr || path == nullptr || out == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        *out = nullptr;
        FILE * f = std::fopen(path, "rb");
        if (f == nullptr) {
            return static_cast<int32_t>(LA_E_NOT_FOUND);
        }
        std::fclose(f);
        auto build = [&](llama_adapter_lora *& lora) {
            g_last_error.clear();
            try {
                lora = llama_adapter_lora_init(m->model, path);
            } catch (...) {
                lora = nullptr;
            }
            return static_cast<int32_t>(lora == nullptr ? LA_E_ADAPTER_FAILED : LA_OK);
        };
        auto adopt = [](la_adapter * a, llama_adapter_lora * lora) { a->lora = lora; };
        return new_child(m, llama_adapter_lora_free, build, adopt, out);
    });
}

extern "C" int32_t la_adapter_close(la_adapter * a) {
    return guarded([&] {
        if (a == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        bool release = false;
        {
            std::lock_guard<std::mutex> lock(a->mu);
            if (a->closed) {
                return static_cast<int32_t>(LA_E_RELEASED);
            }
            a->closed = true;
            release = adapter_maybe_free_locked(a);
        }
        if (release) {
            model_release_child(a->owner);
        }
        return static_cast<int32_t>(LA_OK);
    });
}

extern "C" void la_adapter_drop(la_adapter * a) {
    if (a == nullptr) {
        return;
    }
    la_adapter_close(a);
    bool destroy = false;
    {
        std::lock_guard<std::mutex> lock(a->mu);
        a->dropped = true;
        destroy = a->attached == 0;
    }
    if (destroy) {
        delete a;
    }
}

// ---------------------------------------------------------------- devices

extern "C" int32_t la_vram_info(uint64_t * total, uint64_t * free, int32_t * n_devices) {
    return guarded([&] {
        if (total == nullptr || free == nullptr || n_devices == nullptr) {
            return static_cast<int32_t>(LA_E_BAD_ARG);
        }
        la_backend_init();
        *total = 0;
        *free = 0;
        *n_devices = 0;
        for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
            ggml_backend_dev_t dev = ggml_backend_dev_get(i);
            const auto type = ggml_backend_dev_type(dev);
            if (type != GGML_BACKEND_DEVICE_TYPE_GPU && type != GGML_BACKEND_DEVICE_TYPE_IGPU) {
                continue;
            }
            size_t f = 0;
            size_t t = 0;
            ggml_backend_dev_memory(dev, &f, &t);
            *total += t;
            *free += f;
            (*n_devices)++;
        }
        return static_cast<int32_t>(*n_devices == 0 ? LA_E_NO_GPU : LA_OK);
    });
}

extern "C" void la_debug_crash(int32_t how) {
    // Test hook: a real fault inside native code, to prove process isolation.
    if (how == 1) {
        std::abort();
    }
    volatile int * p = nullptr;
    *p = 42;
}
