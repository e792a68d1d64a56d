"""Every message a model actor (through its supervisor) accepts or sends.

All are small frozen dataclasses that pickle across thespian processes.
A user's own thespian actor can drive a model with them:

* send requests to the **model supervisor** (``TreeInfo.models`` from the
  root supervisor, ``System.tree.models`` in the client); it tracks each request so a
  crash of the model process still answers every caller, and forwards it
  to the model's current process;
* every request carries ``req_id`` (unique per caller) and an explicit
  ``reply_to`` address.  When ``reply_to`` is None the supervisor fills in
  the sender, so ``ActorSystem.ask`` and ``self.send`` just work;
* a streaming ``Infer`` sends ``TokenChunk`` messages, then exactly one
  ``Done`` (or one ``ErrorReply``) to ``reply_to``.  Under load several
  tokens of one request are coalesced into one chunk, never dropped;
* every other request gets exactly one reply: its result type or
  ``ErrorReply``.  After a crash of the model process the reply is
  ``ErrorReply(reason="model_crashed")``.

Replies echo ``req_id``; a subscriber should ignore messages for
requests it has already seen finish (a crash racing a final reply can
add a late ``model_crashed`` error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors.errors import ErrorReply

__all__ = ["ErrorReply"]  # the one error reply (actors.errors), re-exported: every actor answers with it



@dataclass(frozen=True)
class ChatPrompt:
    """A chat the model renders through its own template and tokenizes itself, as one request.

    Why a prompt type and not a separate ``ApplyChatTemplate`` first: a server that renders and then
    generates pays two round trips to the model per request; sent as the prompt, the render happens
    where the tokens are needed.  The tokens are what ``ApplyChatTemplate(tokenize=True,
    add_assistant=True)`` answers for the same fields.
    """

    messages: tuple[dict[str, Any], ...] | list[dict[str, Any]] = ()
    system: str | None = None
    tools: tuple[dict[str, Any], ...] | list[dict[str, Any]] | None = None


Prompt = str | tuple[int, ...] | list[int] | ChatPrompt

# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class GenOptions:
    """Per-request generation options.

    ``sampler`` holds sampler options (``temperature``, ``top_k``,
    ``top_p``, ``min_p``, ``repetition_penalty``, ``repeat_last_n``,
    ``seed``, ``grammar``); empty means greedy.  Text prompts are
    tokenized with ``add_special``/``parse_special``.  ``cache=False``
    skips lookup and saves; ``tier`` overrides the cache's default tier.

    ``stop_sequences``: generation ends at the first of these strings in
    the answer text (by position); the match is never delivered.
    ``thinking``: ``"enabled"`` routes the model's thinking span (its
    ``thinking_markers``) to thinking events; ``thinking_budget_tokens``
    caps it.  ``timeout_s``: the request ends with ``finish_reason
    "timeout"`` (and what it produced so far) once this long has passed
    since the model received it (queueing included).

    ``expect_committed``: the caller's view of what the model holds for it, as a token count or the
    token list (a pinned session's tokens; nothing for a request without one).  When the model holds
    something else the request is refused with ``transcript_mismatch`` and nothing is generated.
    """

    max_tokens: int = 64
    sampler: dict[str, Any] = field(default_factory=dict)
    parent_key: bytes | None = None
    session_id: str | None = None
    add_special: bool = True
    parse_special: bool = True
    cache: bool = True
    tier: str | None = None
    stop_sequences: tuple[str, ...] = ()
    thinking: str = "disabled"
    thinking_budget_tokens: int | None = None
    timeout_s: float | None = None
    expect_committed: int | tuple[int, ...] | None = None


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class ModelRequest:
    """Base of requests addressed to one model (routed by ``model``).

    ``inbox``: optionally the caller's ``LocalInbox`` (``actors.model.local_inbox``); the model then
    sends this request's events and reply through that Unix socket when it runs on the same host,
    and to ``reply_to`` otherwise.  Others (the supervisor's ``model_crashed``) use ``reply_to``.
    """

    model: str
    req_id: str
    reply_to: Any = None
    inbox: Any = None

    @property
    def reply_dest(self) -> Any:
        """Where the model sends this request's events and reply."""
        return self.inbox or self.reply_to


@dataclass(frozen=True)
class Complete(ModelRequest):
    """Generate and answer once with a ``Completion``."""

    prompt: Prompt = ""
    options: GenOptions = field(default_factory=GenOptions)


@dataclass(frozen=True)
class Infer(ModelRequest):
    """Generate and stream ``TokenChunk``s then one ``Done`` to ``reply_to`` (the subscriber)."""

    prompt: Prompt = ""
    options: GenOptions = field(default_factory=GenOptions)


@dataclass(frozen=True)
class PrefillOnly(ModelRequest):
    """Load the prompt into KV (cache restore + prefill), save it, sample nothing.

    The reply is a ``Completion`` with ``finish_reason="prefill"`` whose
    ``finish_key`` is the ``parent_key`` for a later request.
    """

    prompt: Prompt = ""
    options: GenOptions = field(default_factory=GenOptions)


@dataclass(frozen=True)
class Continue(ModelRequest):
    """Append caller-asserted ``suffix`` tokens to a pinned session's live sequence.

    No prefix check and no cache lookup: the caller vouches that the
    suffix follows the session's stored tokens.  ``stream=True`` streams
    like ``Infer``; otherwise one ``Completion``.  Errors: ``no_session``,
    ``sticky_busy``.
    """

    suffix: Prompt = ()
    options: GenOptions = field(default_factory=GenOptions)
    stream: bool = False


@dataclass(frozen=True)
class Cancel(ModelRequest):
    """Stop request ``target`` (idempotent).  The target's caller gets its
    final reply with ``finish_reason="cancelled"``; no reply to the cancel itself."""

    target: str = ""


@dataclass(frozen=True)
class Abort(ModelRequest):
    """Stop request ``target`` now, even inside a decode (no reply to the abort itself).

    A decode in flight that holds the target is stopped through llama.cpp's abort callback; the
    context is then reset in place (the requests of that step get ``ErrorReply("aborted")``, the other
    admitted requests ``context_reset``, sessions are dropped, the weights stay).  A target not in
    a decode just ends as if cancelled.
    """

    target: str = ""


@dataclass(frozen=True)
class EndSession(ModelRequest):
    """Free a sticky session's sequence (idempotent); replies ``Value(True|False)`` (False: unknown id)."""

    session_id: str = ""


@dataclass(frozen=True)
class Evict(ModelRequest):
    """Save idle sessions (reason ``evict``) and free their sequences; None = all idle sessions.

    Replies ``Value({"evicted": n, "keys": [...]})``.
    """

    session_id: str | None = None


@dataclass(frozen=True)
class Tokenize(ModelRequest):
    """Defaults as for a request's prompt (``GenOptions``), so a text tokenizes the same way in both."""

    text: str = ""
    add_special: bool = True
    parse_special: bool = True


@dataclass(frozen=True)
class Detokenize(ModelRequest):
    tokens: tuple[int, ...] | list[int] = ()


@dataclass(frozen=True)
class ApplyChatTemplate(ModelRequest):
    """Render through the model's chat template; ``tokenize=True`` answers token ids."""

    messages: tuple[dict[str, Any], ...] | list[dict[str, Any]] = ()
    system: str | None = None
    tools: tuple[dict[str, Any], ...] | list[dict[str, Any]] | None = None
    add_assistant: bool = True
    tokenize: bool = False


@dataclass(frozen=True)
class Embed(ModelRequest):
    """Pooled embedding of a text or token list (the model keeps a small embeddings context for it)."""

    input: Prompt = ""


@dataclass(frozen=True)
class EmbedBatch(ModelRequest):
    """Embeddings of many texts or token lists in one message; replies ``Value([vector, ...])``."""

    inputs: tuple[Prompt, ...] | list[Prompt] = ()


@dataclass(frozen=True)
class LoadAdapter(ModelRequest):
    """Load a LoRA adapter (GGUF) and apply it at ``scale``; replies ``Value(adapter info)``.

    Adapter changes apply between requests: the change waits until the
    requests in flight finish (new ones wait behind it), and idle sessions
    are saved and released first, so no KV row ever mixes two adapter sets.
    """

    path: str = ""
    scale: float = 1.0
    adapter_id: str | None = None  # default: the file name without extension


@dataclass(frozen=True)
class UnloadAdapter(ModelRequest):
    adapter_id: str = ""


@dataclass(frozen=True)
class SetAdapterScale(ModelRequest):
    """Change an adapter's scale (0 keeps it loaded but off)."""

    adapter_id: str = ""
    scale: float = 1.0


@dataclass(frozen=True)
class ListAdapters(ModelRequest):
    """Replies ``Value([{adapter_id, path, sha256, scale}, ...])``."""


@dataclass(frozen=True)
class Verify(ModelRequest):
    """Speculative verification: one forward pass over ``candidates`` after ``prefix``.

    Replies ``Value({"accepted": n, "next": token | None, "eog": bool})``:
    ``n`` leading candidates the model agrees with (greedy), then the
    model's own next token (``eog`` True and ``next`` None when that is
    end-of-generation).  Runs on a scratch sequence and leaves sessions and
    KV as they were; refused with ``busy`` unless the model is idle.
    """

    prefix: Prompt = ()
    candidates: tuple[int, ...] | list[int] = ()


@dataclass(frozen=True)
class CachedPrefix(ModelRequest):
    """Longest cached prefix of ``tokens`` for this model (any tier), without touching the row.

    Replies ``Value({"length": n, "kind": exact|prefix|none, "tier": ..., "key": hex | None})``.
    """

    tokens: Prompt = ()


@dataclass(frozen=True)
class VramInfoReq(ModelRequest):
    """GPU memory as the model's process sees it; replies ``Value({"gpu": bool, ...})``."""


@dataclass(frozen=True)
class ModelStatusReq(ModelRequest):
    """Rich status, answered by the model actor's message thread (never waits for a decode).

    ``entry``: the supervisor's record of the model (state, restarts, thread share, address), filled
    in as it forwards the request, so one round trip answers ``System.model_info``.
    """

    entry: dict[str, Any] | None = None


@dataclass(frozen=True)
class DebugCrash(ModelRequest):
    """Test hook: crash the model process at its next tick (``segv``, ``abort`` or ``kill``),
    or raise a Python exception inside the tick (``raise``: in-flight requests get ``internal_error``),
    or make the next decode hold for ``hold_ms`` (``hold``: a decode past its ``decode_budget_ms``).

    Refused with ``ErrorReply("debug_disabled")`` unless the model was
    loaded with ``allow_debug_crash=True``.
    """

    how: str = "segv"
    hold_ms: int = 0  # how="hold": the next decode takes this long (past a short decode_budget_ms)


# --------------------------------------------------------------------------- replies and events


@dataclass(frozen=True)
class CacheDelta:
    """``read``: tokens served from a warm prefix (cache row or live sticky cells);
    ``created``: tokens this request added to the cache beyond that prefix."""

    read: int = 0
    created: int = 0


@dataclass(frozen=True)
class Completion:
    """Result of Complete / PrefillOnly / Continue, and the payload of ``Done``.

    ``context_tokens`` are the tokens whose state the model holds after the
    request (prompt + generated; a last token that was sampled but not yet
    decoded when generation stopped is in ``generated`` only), and
    ``committed_tokens`` is their count.  ``finish_key`` is the cache key of
    exactly those tokens when such a row exists (pass it as ``parent_key``).
    ``finish_reason``: ``stop`` (end of generation, or a stop sequence,
    then named in ``stop_sequence``), ``length`` (max_tokens or the
    sequence's context is full), ``cancelled``, ``timeout`` (``timeout_s``)
    or ``prefill`` (PrefillOnly).  ``thinking`` / ``thinking_signature`` and
    ``tool_calls`` hold the spans a model with markers produced.  ``cache_hit_kind``: ``exact``, ``partial``,
    ``cold``, ``sticky`` or ``continuation``.
    """

    req_id: str
    reply: str
    generated: tuple[int, ...]
    context_tokens: tuple[int, ...]
    committed_tokens: int
    finish_key: bytes | None
    cache_hit_kind: str
    finish_reason: str
    cache_delta: CacheDelta
    stats: dict[str, Any]
    stop_sequence: str | None = None
    thinking: str = ""
    thinking_signature: str = ""
    tool_calls: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenChunk:
    """Streamed output: ``text`` holds only complete UTF-8 characters (bytes of a
    character split across tokens are held back until it is complete).

    ``kind``: ``text`` (the answer), ``thinking`` (inside the model's thinking
    markers, when the request enabled thinking) or ``tool_call`` (inside its
    tool-call markers).  A chunk may carry token ids and no text (bytes held
    back: a split character, a possible marker or stop sequence).
    """

    req_id: str
    text: str
    token_ids: tuple[int, ...]
    ts: float = 0.0  # wall clock when the chunk's first token was sampled (delivery latency)
    kind: str = "text"
    prompt_tokens: int = 0  # on a request's first chunk: its prompt's length in tokens (0 on the others)


@dataclass(frozen=True)
class ThinkingEnd:
    """A thinking block ended (streamed before any answer text that follows it).

    ``signature``: hex HMAC-SHA256 of ``text`` under the node's thinking key
    ("" when no key is configured); ``complete`` is False when generation
    stopped inside the block.
    """

    req_id: str
    text: str
    signature: str
    complete: bool = True


@dataclass(frozen=True)
class ToolCallEnd:
    """A tool call ended: ``data`` holds exactly the bytes between its markers
    (the concatenation of its ``tool_call`` chunks)."""

    req_id: str
    data: bytes
    complete: bool = True

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


@dataclass(frozen=True)
class Done:
    req_id: str
    result: Completion


@dataclass(frozen=True)
class Value:
    """Generic one-value reply (pass-throughs, end_session, evict)."""

    req_id: str
    value: Any


@dataclass(frozen=True)
class ModelStatus:
    req_id: str
    model: str
    status: dict[str, Any]


# --------------------------------------------------------------------------- supervisor <-> model actor


@dataclass(frozen=True)
class ModelConfig:
    """How to start one model actor; kept by the supervisor and reused verbatim on restart.

    ``backend``: ``llama`` (``path`` None = the bundled model) or ``stub``
    (deterministic, no model file; ``stub`` holds ``StubConfig`` fields).
    ``context`` are ``Model.new_context`` options (``n_ctx``, ``n_batch``,
    ``n_seq_max``, ...), ``model_options`` are ``Model(...)`` options.
    ``max_pending`` / ``on_full``: admission limits (``validate.AdmissionLimits``).
    """

    backend: str = "llama"
    path: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    prefill_chunk_size: int | None = None
    stub: dict[str, Any] = field(default_factory=dict)
    use_cache: bool = True
    allow_debug_crash: bool = False
    embeddings: bool = False
    thinking_markers: dict[str, str] | None = None
    tool_call_markers: dict[str, str] | None = None
    max_pending: int | None = None  # None: validate.DEFAULT_MAX_PENDING
    on_full: str = "queue"
    decode_budget_ms: int | None = None  # None: engine.DEFAULT_DECODE_BUDGET_MS; 0: unbounded


@dataclass(frozen=True)
class LoadModel:
    model_id: str
    config: ModelConfig
    req_id: str = ""
    reply_to: Any = None


@dataclass(frozen=True)
class UnloadModel:
    """Graceful: live sessions and in-flight sequences get a ``shutdown`` save, then the process stops."""

    model_id: str
    req_id: str = ""
    reply_to: Any = None
    save: bool = True


@dataclass(frozen=True)
class ListModels:
    req_id: str = ""
    reply_to: Any = None


@dataclass(frozen=True)
class ModelLoaded:
    req_id: str
    model_id: str
    info: dict[str, Any]


@dataclass(frozen=True)
class ModelInit:
    """First message to a (re)started model actor."""

    model_id: str
    config: ModelConfig
    supervisor: Any
    meta: Any
    cache_config: Any
    admin_port: int
    obs_path: str | None
    obs_slot: int
    restarts: int = 0
    thinking_key: Any = None  # actors.secret.Secret | None
    adapters: tuple[tuple[str, str, float], ...] = ()  # (adapter_id, path, scale) to re-apply after a restart


@dataclass(frozen=True)
class ModelReady:
    model_id: str
    pid: int
    info: dict[str, Any]
    cache_client_id: str | None
    door: Any = None  # a ``door.DoorAddress``: where clients on this host send generation requests directly


@dataclass(frozen=True)
class DoorClosed:
    """To the model supervisor, from a client: its connection to process ``pid``'s request door ended with
    requests unanswered, so that process is dying.  No reply: the supervisor handles the death now, and
    the client answers its own requests ``model_crashed`` once this message has been handed over."""

    model: str
    pid: int


@dataclass(frozen=True)
class ModelLoadFailed:
    model_id: str
    reason: str
    detail: str


@dataclass(frozen=True)
class AdaptersChanged:
    """Model -> supervisor: the adapter set now in force, so a restarted model gets it back."""

    model_id: str
    adapters: tuple[tuple[str, str, float], ...]


@dataclass(frozen=True)
class RequestDone:
    """Model -> supervisor: stop tracking these requests (their final reply is out)."""

    req_ids: tuple[str, ...]


@dataclass(frozen=True)
class StopModel:
    req_id: str = ""
    save: bool = True


@dataclass(frozen=True)
class SetThreads:
    """Supervisor -> model actor: run llama.cpp with this many threads from the next step on.

    The node's core budget (``actors.supervisor.cores``) changed, because a
    model was loaded or unloaded beside this one; no restart needed.
    """

    n_threads: int
    n_threads_batch: int


@dataclass(frozen=True)
class ModelStopped:
    model_id: str
    req_id: str
    saved: int


@dataclass(frozen=True)
class CacheRebind:
    """The cache meta was restarted: subscribe a fresh cache client to ``meta``."""

    meta: Any
