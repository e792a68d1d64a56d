"""JSON Schema (the common subset) to a GBNF grammar, pure.

``response_format`` of the OpenAI API asks for a JSON object
(``json_object``) or for JSON matching a schema (``json_schema``).  The
model actor already constrains sampling with a GBNF grammar per request,
so both become a grammar here and nothing else changes on the model side.

Supported: ``type`` (``object``, ``array``, ``string``, ``number``,
``integer``, ``boolean``, ``null``, or a list of them), ``properties`` with
``required`` (declared properties in declaration order: required ones
always, optional ones may be left out), ``items``, ``minItems`` /
``maxItems``, ``enum``, ``const``, ``anyOf`` / ``oneOf``, ``$ref`` into
``$defs`` / ``definitions`` (recursion allowed), and a schema-less
``{}`` (any JSON value).  An object with ``properties`` produces exactly
those keys (as OpenAI's strict mode does); an object without them is any
JSON object.  Anything else (``pattern``, ``allOf``, numeric bounds...)
raises :class:`SchemaError` naming the path, rather than being silently
ignored.

Whitespace is at most one space between tokens: a small model
constrained by a grammar that allows unbounded whitespace can fill its
whole budget with newlines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

MAX_BOUNDED_ITEMS = 32

# Shared rules, emitted only when used.
_BASE: dict[str, str] = {
    "ws": '" "?',
    "string": r'"\"" char* "\""',
    # JSON (RFC 8259) allows every character but ", \ and the C0 controls unescaped (DEL included).
    "char": r'[^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" hex hex hex hex)',
    "hex": "[0-9a-fA-F]",
    "integer": '"-"? ("0" | [1-9] [0-9]*)',
    "number": '"-"? ("0" | [1-9] [0-9]*) ("." [0-9]+)? ([eE] [-+]? [0-9]+)?',
    "boolean": '"true" | "false"',
    "null": '"null"',
    "value": "object | array | string | number | boolean | null",
    "object": '"{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* )? ws "}"',
    "array": '"[" ws ( value ( ws "," ws value )* )? ws "]"',
}
_DEPS: dict[str, tuple[str, ...]] = {
    "string": ("char",), "char": ("hex",), "value": ("object", "array", "string", "number", "boolean", "null"),
    "object": ("ws", "string", "value"), "array": ("ws", "value"),
}
_KNOWN_KEYS = {"type", "properties", "required", "items", "minItems", "maxItems", "enum", "const", "anyOf", "oneOf",
               "$ref", "$defs", "definitions", "additionalProperties", "title", "description", "default", "examples",
               "$schema", "$id", "strict", "nullable", "format"}
_PRIMITIVES = ("string", "number", "integer", "boolean", "null")


class SchemaError(ValueError):
    """The schema uses something outside the supported subset; ``path`` names where."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path or '<root>'}: {reason}")
        self.path = path
        self.reason = reason


def literal(text: str) -> str:
    """A GBNF string literal matching exactly ``text``."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def json_literal(value: Any) -> str:
    """A GBNF literal for one JSON value, spelled as ``json.dumps`` does (compact)."""
    return literal(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


class _Builder:
    def __init__(self, root_schema: Mapping[str, Any]) -> None:
        self.root_schema = root_schema
        self.rules: dict[str, str] = {}
        self.used: set[str] = set()
        self.refs: dict[str, str] = {}

    def grammar(self, root: str) -> str:
        """The whole grammar: ``root``, the rules made on the way, the shared rules used."""
        lines = [f"root ::= {root}"]
        lines += [f"{name} ::= {body}" for name, body in self.rules.items()]
        lines += [f"{name} ::= {_BASE[name]}" for name in _BASE if name in self.used]
        return "\n".join(lines) + "\n"

    def use(self, name: str) -> str:
        if name not in self.used:
            self.used.add(name)
            for dep in _DEPS.get(name, ()):
                self.use(dep)
        return name

    def new_rule(self, hint: str, body: str) -> str:
        base = re.sub(r"[^a-zA-Z0-9]+", "-", hint).strip("-").lower() or "r"
        if base in _BASE or base == "root":
            base = f"{base}-s"
        name, i = base, 1
        while name in self.rules:
            i += 1
            name = f"{base}-{i}"
        self.rules[name] = body
        return name

    def resolve(self, ref: str, path: str) -> str:
        if ref in self.refs:
            return self.refs[ref]
        m = re.fullmatch(r"#/(\$defs|definitions)/([^/]+)", ref)
        if not m:
            raise SchemaError(path, f"$ref {ref!r}: only #/$defs/NAME and #/definitions/NAME are supported")
        defs = self.root_schema.get(m.group(1))
        if not isinstance(defs, Mapping) or m.group(2) not in defs:
            raise SchemaError(path, f"$ref {ref!r}: no such definition")
        name = self.new_rule(f"def-{m.group(2)}", "")
        self.refs[ref] = name  # registered before the body, so recursive references terminate
        self.rules[name] = self.expr(defs[m.group(2)], f"{m.group(1)}.{m.group(2)}")
        return name

    def expr(self, schema: Any, path: str) -> str:
        """A GBNF expression for ``schema`` (a rule name or an alternation in parentheses)."""
        if schema is True or (isinstance(schema, Mapping) and not schema):
            return self.use("value")
        if not isinstance(schema, Mapping):
            raise SchemaError(path, "a schema must be an object")
        unknown = sorted(set(schema) - _KNOWN_KEYS)
        if unknown:
            raise SchemaError(path, f"unsupported keyword {unknown[0]!r}")
        if "$ref" in schema:
            return self.resolve(str(schema["$ref"]), path)
        if "const" in schema:
            return json_literal(schema["const"])
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise SchemaError(path, "enum must be a non-empty array")
            return "(" + " | ".join(json_literal(v) for v in values) + ")"
        for key in ("anyOf", "oneOf"):
            if key in schema:
                subs = schema[key]
                if not isinstance(subs, list) or not subs:
                    raise SchemaError(path, f"{key} must be a non-empty array")
                return "(" + " | ".join(self.expr(s, f"{path}.{key}[{i}]") for i, s in enumerate(subs)) + ")"
        types = schema.get("type")
        if types is None:
            if "properties" in schema:
                types = "object"
            elif "items" in schema:
                types = "array"
            else:
                return self.use("value")
        if isinstance(types, list):
            if not types:
                raise SchemaError(path, "type must not be an empty list")
            return "(" + " | ".join(self.typed(schema, t, path) for t in types) + ")"
        expr = self.typed(schema, types, path)
        if schema.get("nullable") is True:
            return f"({expr} | {self.use('null')})"
        return expr

    def typed(self, schema: Mapping[str, Any], t: Any, path: str) -> str:
        if t in _PRIMITIVES:
            return self.use(t)
        if t == "object":
            return self.object(schema, path)
        if t == "array":
            return self.array(schema, path)
        raise SchemaError(path, f"unknown type {t!r}")

    def object(self, schema: Mapping[str, Any], path: str) -> str:
        props = schema.get("properties")
        if props is None:
            return self.use("object")
        if not isinstance(props, Mapping):
            raise SchemaError(path, "properties must be an object")
        required = schema.get("required", [])
        if not isinstance(required, list) or any(r not in props for r in required):
            raise SchemaError(path, "required must list declared properties")
        self.use("ws")
        keys = list(props)
        kv = [f'{json_literal(k)} ws ":" ws {self.expr(props[k], f"{path}.{k}")}' for k in keys]
        # Keys in declaration order, optional ones may be absent; a comma precedes every key but the first
        # present one.  ``rest[i]``: keys i.. after one was written; ``first``: keys i.. before any was.
        rest = [""] * (len(keys) + 1)
        for i in range(len(keys) - 1, -1, -1):
            item = f' ws "," ws {kv[i]}'
            rest[i] = (item if keys[i] in required else f" ({item} )?") + rest[i + 1]
        first: str | None = None  # a non-empty expression for keys i.., None when only "nothing" is left
        nullable = True
        for i in range(len(keys) - 1, -1, -1):
            written = kv[i] + rest[i + 1]
            if keys[i] in required:
                first, nullable = written, False
            else:
                first = f"( {written} | {first} )" if first else written
        body = "" if first is None else (f"( {first} )?" if nullable else first)
        return self.new_rule(f"{path}-obj", f'"{{" ws {body} ws "}}"' if body else '"{" ws "}"')

    def array(self, schema: Mapping[str, Any], path: str) -> str:
        item = self.expr(schema.get("items", {}), f"{path}[]")
        lo = schema.get("minItems", 0)
        hi = schema.get("maxItems")
        if not isinstance(lo, int) or lo < 0 or (hi is not None and (not isinstance(hi, int) or hi < lo)):
            raise SchemaError(path, "minItems/maxItems must be integers with 0 <= minItems <= maxItems")
        if max(lo, hi or 0) > MAX_BOUNDED_ITEMS:
            raise SchemaError(path, f"minItems/maxItems above {MAX_BOUNDED_ITEMS} are not supported")
        self.use("ws")
        sep = f'ws "," ws {item}'
        if lo == 0 and hi is None:
            body = f"( {item} ( {sep} )* )?"
        elif hi is None:
            body = " ".join([item] + [sep] * (lo - 1)) + f" ( {sep} )*"
        elif hi == 0:
            body = ""
        else:
            first = 1 if lo == 0 else lo
            tail = "".join(f" ( {sep}" for _ in range(hi - first)) + " )?" * (hi - first)
            body = " ".join([item] + [sep] * (first - 1)) + tail
            if lo == 0:
                body = f"( {body} )?"
        return self.new_rule(f"{path}-arr", f'"[" ws {body} ws "]"' if body else '"[" ws "]"')


def schema_to_gbnf(schema: Mapping[str, Any] | bool) -> str:
    """A GBNF grammar (root rule ``root``) whose sentences are JSON documents valid against ``schema``."""
    b = _Builder(schema if isinstance(schema, Mapping) else {})
    return b.grammar(b.expr(schema, ""))


def tool_call_gbnf(tools: list[Mapping[str, Any]], start: str = "<tool_call>", end: str = "</tool_call>") -> str:
    """A reply that is exactly one call of one of ``tools`` (``{name, parameters}`` specs), between the markers:
    ``<tool_call>{"name": "...", "arguments": {...}}</tool_call>``.  What ``tool_choice`` = required (or a
    named tool) asks for: the model may still pick the arguments, never skip the call."""
    calls = [{"type": "object", "required": ["name", "arguments"],
              "properties": {"name": {"const": t["name"]},
                             "arguments": t.get("parameters") or {"type": "object"}}} for t in tools]
    if not calls:
        raise SchemaError("tools", "no tool to call")
    b = _Builder({})
    return b.grammar(f"{literal(start)} {b.expr({'anyOf': calls}, 'tools')} {literal(end)}")


def json_object_gbnf() -> str:
    """``response_format: {"type": "json_object"}``: any JSON object."""
    return schema_to_gbnf({"type": "object"})


__all__ = ["SchemaError", "json_literal", "json_object_gbnf", "literal", "schema_to_gbnf", "tool_call_gbnf"]
