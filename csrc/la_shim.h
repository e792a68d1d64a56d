/*
 * llama-actors native shim: a thin, crash-proof C surface over llama.cpp.
 *
 * Every function returns an la_status code (0 = ok) and writes results through
 * out-parameters, so no C++ exception and no llama.cpp assertion on bad input
 * can reach Python. Handles follow a two-stage lifetime: *_close releases the
 * llama.cpp resource (deferred while children still use it), *_drop frees the
 * handle itself and is only called by the Python garbage collector. A closed
 * handle answers LA_E_RELEASED instead of crashing.
 *
 * The block between CDEF BEGIN and CDEF END is fed verbatim to cffi, so it
 * must stay plain C declarations: no macros, no includes.
 */
#ifndef LA_SHIM_H
#define LA_SHIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CDEF BEGIN */
typedef enum la_status {
    LA_OK = 0,
    LA_E_EXCEPTION = 1,
    LA_E_RELEASED = 2,
    LA_E_BAD_ARG = 3,
    LA_E_MALFORMED_GGUF = 4,
    LA_E_LOAD_FAILED = 5,
    LA_E_CONTEXT_FAILED = 6,
    LA_E_CONTEXT_OVERFLOW = 7,
    LA_E_BATCH_OVERFLOW = 8,
    LA_E_NO_LOGITS = 9,
    LA_E_BAD_TOKEN = 10,
    LA_E_BAD_SEQ = 11,
    LA_E_DECODE_FAILED = 12,
    LA_E_KV_FULL = 13,
    LA_E_GRAMMAR = 14,
    LA_E_BUFFER_TOO_SMALL = 15,
    LA_E_UNPACK_FAILED = 16,
    LA_E_TEMPLATE = 17,
    LA_E_NO_TEMPLATE = 18,
    LA_E_NOT_EMBEDDINGS = 19,
    LA_E_ADAPTER_FAILED = 20,
    LA_E_NO_GPU = 21,
    LA_E_NO_MEMORY = 22,
    LA_E_SAMPLER_FAILED = 23,
    LA_E_NOT_FOUND = 24,
    LA_E_DECODE_TIMEOUT = 25,
    LA_E_ABORTED = 26
} la_status;

typedef struct la_model la_model;
typedef struct la_context la_context;
typedef struct la_sampler la_sampler;
typedef struct la_adapter la_adapter;

typedef struct la_model_params {
    int32_t n_gpu_layers;
    int32_t main_gpu;
    int32_t split_mode;          /* 0 none, 1 layer, 2 row (llama_split_mode) */
    const float * tensor_split;  /* NULL or n_tensor_split entries */
    int32_t n_tensor_split;
    int32_t load_mode;           /* llama_load_mode: -1 auto, 0 none, 1 mmap, 2 mlock, 3 mmap+mlock */
    bool vocab_only;
} la_model_params;

typedef struct la_model_info {
    uint64_t size_bytes;
    uint64_t n_params;
    int32_t n_layer;
    int32_t n_ctx_train;
    int32_t n_embd;
    int32_t n_vocab;
    int32_t ftype;
    int32_t token_bos;
    int32_t token_eos;
    bool has_chat_template;
    bool vocab_only;
} la_model_info;

typedef struct la_context_params {
    uint32_t n_ctx;
    uint32_t n_batch;
    uint32_t n_ubatch;
    uint32_t n_seq_max;
    int32_t n_threads;
    int32_t n_threads_batch;
    bool embeddings;
    bool offload_kqv;
    bool kv_unified;
    int32_t flash_attn;          /* -1 auto, 0 disabled, 1 enabled (llama_flash_attn_type) */
    int32_t type_k;              /* ggml_type */
    int32_t type_v;              /* ggml_type */
    int32_t pooling;             /* -1 unspecified (llama_pooling_type) */
} la_context_params;

typedef struct la_context_info {
    uint32_t n_ctx;
    uint32_t n_ctx_seq;
    uint32_t n_batch;
    uint32_t n_ubatch;
    uint32_t n_seq_max;
    int32_t n_threads;
    int32_t n_threads_batch;
    int32_t pooling;
    bool embeddings;
} la_context_info;

typedef struct la_sampler_params {
    float temperature;           /* <= 0: greedy */
    int32_t top_k;               /* <= 0: off */
    float top_p;                 /* >= 1: off */
    float min_p;                 /* <= 0: off */
    float repeat_penalty;        /* 1: off */
    int32_t repeat_last_n;
    uint32_t seed;
    const char * grammar;        /* NULL or GBNF text */
    const char * grammar_root;   /* NULL: "root" */
    const int32_t * bias_tokens; /* n_bias token ids (each < n_vocab), or NULL */
    const float * bias_values;   /* added to those tokens' logits before anything else samples */
    int32_t n_bias;
} la_sampler_params;

/* One row of a step: kind 0 = prefill `tokens`, kind 1 = sample with `sampler`
 * from this sequence's pending logits and append the sampled token. */
typedef struct la_step_row {
    int32_t seq;
    int32_t kind;
    const int32_t * tokens;
    int32_t n_tokens;
    la_sampler * sampler;
} la_step_row;

/* kind 0: prefilled (token = -1); kind 1: token sampled, eog set when it ends
 * generation (an end-of-generation token is reported but never decoded). */
typedef struct la_step_result {
    int32_t seq;
    int32_t kind;
    int32_t token;
    bool eog;
} la_step_result;

void la_backend_init(void);
void la_log_set_level(int32_t level);
int32_t la_last_error(char * buf, int32_t cap);
int32_t la_max_devices(void);
int32_t la_type_name(int32_t ggml_type, char * buf, int32_t cap);

int32_t la_model_default_params(la_model_params * out);
int32_t la_model_load(const char * path, const la_model_params * params, la_model ** out);
int32_t la_model_close(la_model * model);
void la_model_drop(la_model * model);
int32_t la_model_info_get(la_model * model, la_model_info * out);
int32_t la_model_desc(la_model * model, char * buf, int32_t cap, int32_t * n_out);
int32_t la_model_meta(la_model * model, const char * key, char * buf, int32_t cap, int32_t * n_out);
int32_t la_model_chat_template(la_model * model, char * buf, int32_t cap, int32_t * n_out);

int32_t la_tokenize(la_model * model, const char * text, int32_t len, bool add_special, bool parse_special,
                    int32_t * out, int32_t cap, int32_t * n_out);
int32_t la_detokenize(la_model * model, const int32_t * tokens, int32_t n, bool remove_special,
                      bool unparse_special, char * buf, int32_t cap, int32_t * n_out);
int32_t la_token_to_piece(la_model * model, int32_t token, bool special, char * buf, int32_t cap,
                          int32_t * n_out);
int32_t la_token_is_eog(la_model * model, int32_t token, bool * out);
/* The tokenizer's special tokens (attribute control, user-defined or unknown: the ones it splits text on
   before tokenizing the pieces between them), at most cap ids with their llama_token_attr bits. */
int32_t la_vocab_specials(la_model * model, int32_t * ids, int32_t * attrs, int32_t cap, int32_t * n_out);
/* A token's text as the vocabulary stores it (what the tokenizer matches), not its rendered piece. */
int32_t la_vocab_text(la_model * model, int32_t token, char * buf, int32_t cap, int32_t * n_out);
/* The vocabulary's llama_vocab_type and what add_special adds around a text. */
int32_t la_vocab_kind(la_model * model, int32_t * type, bool * add_bos, bool * add_eos, bool * add_sep);
int32_t la_chat_apply_template(la_model * model, const char * tmpl, const char ** roles,
                               const char ** contents, int32_t n_msg, bool add_assistant, char * buf,
                               int32_t cap, int32_t * n_out);

int32_t la_context_default_params(la_context_params * out);
int32_t la_context_new(la_model * model, const la_context_params * params, la_context ** out);
int32_t la_context_close(la_context * ctx);
void la_context_drop(la_context * ctx);
int32_t la_context_info_get(la_context * ctx, la_context_info * out);
int32_t la_set_threads(la_context * ctx, int32_t n_threads, int32_t n_threads_batch);

int32_t la_seq_pos_max(la_context * ctx, int32_t seq, int32_t * out);
int32_t la_seq_rm(la_context * ctx, int32_t seq, int32_t p0, int32_t p1);
int32_t la_seq_has_logits(la_context * ctx, int32_t seq, bool * out);
int32_t la_step(la_context * ctx, const la_step_row * rows, int32_t n_rows, la_step_result * out);
/* Bounded and abortable decodes (llama.cpp's abort callback, CPU backend). Every decode of the
 * context gets budget_ms (0: unbounded) and ends with LA_E_DECODE_TIMEOUT past it; la_abort sets
 * (on) or clears an abort flag that ends the decode in flight, or the next one, with LA_E_ABORTED.
 * la_abort takes no lock, so another thread can call it while a decode holds the context.
 * After either, the decoded part of the batch may remain in KV: la_reset clears all of it.
 * la_debug_hold_decode (test hook): the next decode waits up to ms at its first check, as a
 * slow graph would, ending early if its budget or an abort says so. */
int32_t la_set_decode_budget(la_context * ctx, int32_t budget_ms);
int32_t la_abort(la_context * ctx, bool on);
int32_t la_reset(la_context * ctx);
int32_t la_debug_hold_decode(la_context * ctx, int32_t ms);
/* Sample from the pending logits without decoding: the token is known at once;
 * append it later with a prefill row (sample + prefill row == one decode row). */
int32_t la_sample(la_context * ctx, int32_t seq, la_sampler * sampler, int32_t * token, bool * eog);
int32_t la_get_logits(la_context * ctx, int32_t seq, float * out, int32_t cap, int32_t * n_out);
int32_t la_set_logits(la_context * ctx, int32_t seq, const float * logits, int32_t n);
int32_t la_kv_size(la_context * ctx, int32_t seq, size_t * out);
int32_t la_kv_pack(la_context * ctx, int32_t seq, uint8_t * buf, size_t cap, size_t * n_out);
int32_t la_kv_unpack(la_context * ctx, int32_t seq, const uint8_t * buf, size_t n);
int32_t la_embed(la_context * ctx, int32_t seq, const int32_t * tokens, int32_t n, float * out, int32_t cap,
                 int32_t * n_out);
int32_t la_forward_argmax(la_context * ctx, int32_t seq, const int32_t * tokens, int32_t n, int32_t * out);
int32_t la_set_adapters(la_context * ctx, la_adapter ** adapters, const float * scales, int32_t n);

int32_t la_sampler_new(la_model * model, const la_sampler_params * params, la_sampler ** out);
int32_t la_sampler_close(la_sampler * sampler);
void la_sampler_drop(la_sampler * sampler);
int32_t la_sampler_reset(la_sampler * sampler);
int32_t la_sampler_accept(la_sampler * sampler, int32_t token);

int32_t la_adapter_load(la_model * model, const char * path, la_adapter ** out);
int32_t la_adapter_close(la_adapter * adapter);
void la_adapter_drop(la_adapter * adapter);

int32_t la_vram_info(uint64_t * total, uint64_t * free, int32_t * n_devices);
void la_debug_crash(int32_t how);
/* CDEF END */

#ifdef __cplusplus
}
#endif

#endif
