"""Spec documents in request bodies: JSON, or YAML (what people write, and the examples' format).

A body is read up to ``DISTILLERY_MAX_SPEC_BYTES`` (a 413 past it, whatever Content-Length said)
and parsed in a worker thread: a large YAML document takes a while to parse, and the event loop
serves every other request meanwhile.

Only plain data gets through, the same on SQLite and PostgreSQL: YAML's core schema (maps,
lists, strings, numbers, booleans, null; no ``!!binary``, ``!!set``, ``!!timestamp``,
``!python/...`` or custom tags), nesting at most ``MAX_DEPTH`` deep, finite numbers, integers
that fit in 64 bits, and no NUL characters (PostgreSQL cannot store them in text). Anchors and
aliases are fine (the examples share a model between teachers), but a few aliases can stand for
an exponentially large (or a cyclic) document once expanded to JSON, so the expanded size is
bounded.
"""

from __future__ import annotations

import json
import math
import re
from email.message import Message
from typing import Any

import yaml
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from api.deps import SettingsDep
from core.errors import FieldIssue, InvalidRequestError, TooLargeError, UnsupportedMediaTypeError

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
MAX_NODES = 100_000  # values in a document once its aliases are expanded; a spec has a few hundred
MAX_DEPTH = 64  # a spec nests five or six levels
MAX_ERRORS = 20
INT64 = (-(1 << 63), (1 << 63) - 1)
_CORE = "tag:yaml.org,2002:"
_CORE_TAGS = {f"{_CORE}{name}" for name in ("null", "bool", "int", "float", "str", "seq", "map")}
# Strings (with their escapes) and brackets: enough to measure a JSON text's nesting unparsed.
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class _TooBig:
    """An integer literal too long for Python to convert: reported like any other overflow."""


class _DocumentError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Loader(yaml.SafeLoader):
    """The safe loader restricted to the core schema, with nesting bounded as it composes
    (PyYAML composes recursively: a deep document would otherwise exhaust the stack)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise _DocumentError(f"nested deeper than {MAX_DEPTH} levels (line {mark.line + 1})")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_undefined(self, node: Any) -> Any:
        where = f" (line {node.start_mark.line + 1})" if node.start_mark else ""
        tag = f"!!{node.tag.removeprefix(_CORE)}" if node.tag.startswith(_CORE) else node.tag
        raise _DocumentError(f"the YAML tag {tag} is not allowed{where}: send plain data only")

    def construct_yaml_int(self, node: Any) -> Any:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # past Python's digit limit for int()
            return _TooBig()


_Loader.yaml_constructors = {
    tag: make for tag, make in yaml.SafeLoader.yaml_constructors.items() if tag in _CORE_TAGS
}
_Loader.yaml_multi_constructors = {}  # no `!python/...` family of tags
# No implicit timestamps (an unquoted date stays a string) and no `=` value scalars.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (f"{_CORE}timestamp", f"{_CORE}value")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_constructor(f"{_CORE}int", _Loader.construct_yaml_int)
_Loader.add_constructor(None, _Loader.construct_undefined)  # type: ignore[arg-type]  # any other tag


def _expanded_size_ok(document: Any) -> bool:
    """Whether ``document`` stays under ``MAX_NODES`` values with shared ones counted each time."""
    stack, seen = [document], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            return False
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


def _problem(value: Any) -> str | None:
    """Why a scalar cannot be stored as it is on every database, or None."""
    if isinstance(value, _TooBig) or (
        isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]
    ):
        return "integers must fit in 64 bits (signed)"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN and infinite numbers are not allowed"
    if isinstance(value, str) and "\x00" in value:
        return "NUL characters (\\u0000) are not allowed in strings"
    return None


def check_plain(document: Any) -> None:
    """A 422 naming each field (``teacher.model.channels``) that holds a value no database
    stores faithfully, or nesting deeper than ``MAX_DEPTH``. Iterative: depth is the input's."""
    errors: list[FieldIssue] = []
    stack: list[tuple[Any, str, int]] = [(document, "", 0)]
    while stack and len(errors) < MAX_ERRORS:
        node, field, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequestError.field("body", f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            for key, value in node.items():
                path = f"{field}.{key}" if field else str(key)
                if (reason := _problem(key)) is not None:
                    errors.append(FieldIssue(field or "body", f"a key: {reason}"))
                stack.append((value, path, depth + 1))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                stack.append((item, f"{field}.{i}" if field else str(i), depth + 1))
        elif (reason := _problem(node)) is not None:
            errors.append(FieldIssue(field or "body", reason))
    if errors:
        lines = "; ".join(f"{e.field}: {e.message}" for e in errors)
        raise InvalidRequestError(lines, errors=errors)


def media_type(request: Request) -> str:
    message = Message()
    message["content-type"] = request.headers.get("content-type", "")
    return message.get_content_type()


def parse_yaml(raw: bytes) -> Any:
    try:
        loader = _Loader(raw.decode())
        try:
            document = loader.get_single_data()
        finally:
            loader.dispose()
    except UnicodeDecodeError as e:
        raise InvalidRequestError.field("body", f"not UTF-8 text: {e}") from None
    except _DocumentError as e:
        raise InvalidRequestError.field("body", e.message) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise InvalidRequestError.field("body", f"malformed YAML{where}: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise InvalidRequestError.field("body", f"malformed YAML: {e}") from None
    if not _expanded_size_ok(document):
        raise InvalidRequestError.field(
            "body", f"the YAML document expands (through its aliases) past {MAX_NODES} values"
        )
    check_plain(document)
    return document


def _json_depth(raw: bytes) -> int:
    depth = deepest = 0
    for token in _JSON_TOKENS.finditer(raw):
        char = token.group()
        if char in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif char in (b"]", b"}"):
            depth -= 1
    return deepest


def _json_int(text: str) -> int | _TooBig:
    return _TooBig() if len(text) > 20 else int(text)


def parse_json(raw: bytes) -> Any:
    # Measured before parsing: json's parser recurses, and a deep body would exhaust the stack.
    if _json_depth(raw) > MAX_DEPTH:
        raise InvalidRequestError.field("body", f"nested deeper than {MAX_DEPTH} levels")
    try:
        document = json.loads(raw, parse_int=_json_int)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise InvalidRequestError.field("body", f"malformed JSON: {e}") from None
    except RecursionError:
        raise InvalidRequestError.field("body", "the JSON document is nested too deeply") from None
    check_plain(document)
    return document


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than ``limit`` bytes (a 413 past it): Content-Length may lie."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLargeError("spec-too-large", f"the spec is larger than the {limit} bytes accepted")
        chunks.append(chunk)
    return b"".join(chunks)


INLINE_JSON_BYTES = 16 * 1024
"""A JSON spec this small (a usual one is about 1 KiB) is parsed on the event loop: tens of
microseconds, less than the trip to a worker thread would cost. A larger one, and any YAML (PyYAML's
parser is pure Python, milliseconds per kilobyte), is parsed on a worker thread, so that no body
holds the loop that serves every other request."""


async def spec_document(request: Request, settings: SettingsDep) -> Any:
    """The request's spec document: JSON or YAML by its media type, 415 for any other."""
    kind = media_type(request)
    if kind in JSON_TYPES:
        parse = parse_json
    elif kind in YAML_TYPES:
        parse = parse_yaml
    else:
        raise UnsupportedMediaTypeError("send the job spec as application/json or application/yaml")
    raw = await read_body(request, settings.max_spec_bytes)
    if parse is parse_json and len(raw) <= INLINE_JSON_BYTES:
        return parse_json(raw)
    return await run_in_threadpool(parse, raw)
