"""The HTTP front door with the official OpenAI and Anthropic clients, on the bundled model.

    .venv/bin/python examples/http_clients.py

Starts an actor tree and the HTTP server in this process (what `llama-actors serve --http` does
in the serve process), then talks to it the way any OpenAI or Anthropic application would:
a streamed chat, a second turn that resends the conversation (its prefix comes from the cache:
`cached_tokens`), a forced tool call, and an Anthropic message with its cache usage.
"""

from __future__ import annotations

import json

import anthropic
import openai

from actors.api import System
from actors.config import HttpSettings
from actors.http.server import HttpServer

SYSTEM = ("You are the assistant of a hardware shop by the harbour. The shop is open Monday to Saturday from nine "
          "to six, sells tools, paint, rope and garden supplies, and offers key cutting. Answer in one sentence.")


def main() -> None:
    with System() as system:
        system.load_model("smol", context={"n_ctx": 4096, "n_seq_max": 2},
                          tool_call_markers={"start": "<tool_call>", "end": "</tool_call>"})
        with HttpServer(system, HttpSettings(port=0)) as server:  # 127.0.0.1, a free port
            print(f"server: {server.url}")
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed-on-loopback")
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Do you sell rope?"}]
            reply = ""
            for chunk in client.chat.completions.create(model="smol", messages=messages, max_tokens=40,
                                                        temperature=0, stream=True,
                                                        stream_options={"include_usage": True}):
                if chunk.choices and chunk.choices[0].delta.content:
                    reply += chunk.choices[0].delta.content
                if chunk.usage:
                    print(f"turn 1: {reply!r}")
                    print(f"turn 1 usage: prompt {chunk.usage.prompt_tokens}, "
                          f"cached {chunk.usage.prompt_tokens_details.cached_tokens}")
            # A stateless client resends the whole conversation: the shared prefix is a cache hit.
            messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And paint?"}]
            r = client.chat.completions.create(model="smol", messages=messages, max_tokens=40, temperature=0)
            print(f"turn 2: {r.choices[0].message.content!r}")
            print(f"turn 2 usage: prompt {r.usage.prompt_tokens}, cached {r.usage.prompt_tokens_details.cached_tokens}"
                  f" ({r.llama_actors['cache_hit_kind']} hit)")

            weather = {"type": "function", "function": {
                "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                      "required": ["city"]}}}
            t = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Weather in Oslo?"}],
                                               tools=[weather], tool_choice="required", max_tokens=40, temperature=0)
            call = t.choices[0].message.tool_calls[0].function
            print(f"tool call: {call.name}({json.loads(call.arguments)}) finish_reason {t.choices[0].finish_reason}")

            claude = anthropic.Anthropic(base_url=server.url, api_key="not-needed-on-loopback")
            for turn in (1, 2):
                m = claude.messages.create(model="smol", system=SYSTEM, max_tokens=30, extra_body={"temperature": 0},
                                           messages=[{"role": "user", "content": "When are you open?"}])
                print(f"anthropic {turn}: {m.content[0].text!r} stop_reason {m.stop_reason} "
                      f"cache_read_input_tokens {m.usage.cache_read_input_tokens}")


if __name__ == "__main__":
    main()
