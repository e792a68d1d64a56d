"""Scripted workloads, shared by every engine a benchmark drives (pure: no engine, no clock, no I/O).

Why a module of its own: a comparison is only fair when both sides get the
same prompts in the same order.  These generators say *what* is sent; the
drivers in each benchmark say *how* (the Python API, HTTP to llama-server,
HTTP to our server).  Replies are produced by the engine under test, so a
conversation is a script of user turns plus a rule for building each
prompt from what came back.

Text, not token ids, is the unit here: the drivers tokenize with the model
(the same vocabulary on both sides), so the scripts stay readable and no
module here needs the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# Real prose, so prompts tokenize like a system prompt does.
STORE_TEXT = ("Answer in one or two sentences. Store hours are 8am to 6pm Monday to Saturday, closed on Sunday. "
              "We sell tools, paint, garden supplies, plumbing and electrical parts. Returns are accepted within "
              "30 days with a receipt. Deliveries go out on Tuesdays and Fridays within twenty miles. ")
NAMES = ("Alder", "Birch", "Cedar", "Dogwood", "Elm", "Fir", "Ginkgo", "Hazel", "Ironwood", "Juniper", "Larch",
         "Maple")
TOPICS = ("paint", "garden", "plumbing", "lumber", "electrical", "tools", "hardware", "flooring", "roofing",
          "lighting", "heating", "outdoor")
QUESTIONS = ("Are you open on Sunday?", "Can I return a drill I bought last week?", "Do you sell garden hoses?",
             "What paint would you use for a bathroom ceiling?", "How late are you open on Saturday?",
             "Do you cut keys?", "Which glue holds ceramic best?", "Can you deliver lumber?",
             "Do you rent floor sanders?", "What size fuse does a kettle need?", "Do you sell seeds?",
             "Is there parking behind the store?")
STORY = "Once upon a time, in a small village by the sea,"
# Roughly how many tokens one STORE_TEXT repeat is (the drivers cut to the exact length after tokenizing).
TOKENS_PER_REPEAT = 55


@dataclass(frozen=True)
class ChatTurn:
    """One request of an interleaved chat: user ``user`` sends its ``turn``-th message."""

    user: int
    turn: int
    message: str


@dataclass(frozen=True)
class ChatScript:
    """``users`` conversations of ``turns`` turns each, interleaved round-robin (turn-major).

    Every user has its own system prompt of about ``system_tokens`` tokens
    whose first words already differ from every other user's, so no two
    users share more than the BOS token: a cache that keeps only the last
    conversation evaluates every system prompt again.  Every turn resends the
    whole conversation: system prompt, then each earlier user message and
    reply, then the new message.
    """

    users: int
    turns: int
    system_tokens: int
    reply_tokens: int

    def system_prompt(self, user: int) -> str:
        name, topic = NAMES[user % len(NAMES)], TOPICS[(user * 5) % len(TOPICS)]
        head = f"{name} {topic} desk, agent {user + 1}. You are the {topic} assistant of the {name} hardware store. "
        return head + STORE_TEXT * (self.system_tokens // TOKENS_PER_REPEAT + 2)

    def question(self, user: int, turn: int) -> str:
        """The user's words alone (what a chat API sends as the user message)."""
        return QUESTIONS[(user * 7 + turn) % len(QUESTIONS)]

    def message(self, user: int, turn: int) -> str:
        """The turn as raw prompt text (what a completion API appends to the conversation)."""
        return f"\nUser: {self.question(user, turn)}\nAssistant:"

    def order(self) -> Iterator[ChatTurn]:
        for turn in range(self.turns):
            for user in range(self.users):
                yield ChatTurn(user, turn, self.message(user, turn))

    def halves(self) -> tuple[list[ChatTurn], list[ChatTurn]]:
        """The script cut after the first half of its turns (a restart goes between the two)."""
        turns = list(self.order())
        cut = (self.turns // 2) * self.users
        return turns[:cut], turns[cut:]


def next_prompt(conversation: Sequence[int], message: Sequence[int]) -> list[int]:
    """The prompt of a turn: the whole conversation so far, then the new message."""
    return [*conversation, *message]


def after_reply(prompt: Sequence[int], reply: Sequence[int]) -> list[int]:
    """The conversation after a turn: its prompt and the reply the engine produced."""
    return [*prompt, *reply]


def chat_messages(system: str, history: Sequence[tuple[str, str]], message: str) -> list[dict[str, str]]:
    """The same turn as OpenAI-style chat messages (for drivers that speak /v1/chat/completions)."""
    out = [{"role": "system", "content": system}]
    for user, assistant in history:
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return [*out, {"role": "user", "content": message}]


__all__ = ["NAMES", "QUESTIONS", "STORE_TEXT", "STORY", "TOPICS", "ChatScript", "ChatTurn", "after_reply",
           "chat_messages", "next_prompt"]
