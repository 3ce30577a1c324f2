"""Spec documents in request bodies: JSON, or YAML (what people write, and the examples' format).

YAML is read with the safe loader (plain data, never objects). Anchors and aliases are fine (the
examples share a model between teachers), but a few aliases can stand for an exponentially large
(or a cyclic) document once expanded to JSON, so the expanded size is bounded.
"""

from __future__ import annotations

import json
from email.message import Message
from typing import Any

import yaml
from fastapi import Request

from api.problems import ProblemError, invalid

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
MAX_NODES = 100_000  # values in a document once its aliases are expanded; a spec has a few hundred


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


def media_type(request: Request) -> str:
    message = Message()
    message["content-type"] = request.headers.get("content-type", "")
    return message.get_content_type()


def parse_yaml(raw: bytes) -> Any:
    try:
        document = yaml.safe_load(raw.decode())
    except UnicodeDecodeError as e:
        raise invalid("body", f"not UTF-8 text: {e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise invalid("body", f"malformed YAML{where}: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise invalid("body", f"malformed YAML: {e}") from None
    except RecursionError:
        raise invalid("body", "the YAML document is nested too deeply") from None
    if not _expanded_size_ok(document):
        raise invalid("body", f"the YAML document expands (through its aliases) past {MAX_NODES} values")
    return document


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise invalid("body", f"malformed JSON: {e}") from None
    except RecursionError:
        raise invalid("body", "the JSON document is nested too deeply") from None


async def spec_document(request: Request) -> Any:
    """The request's spec document: JSON or YAML by its media type, 415 for any other."""
    kind = media_type(request)
    if kind in JSON_TYPES:
        return parse_json(await request.body())
    if kind in YAML_TYPES:
        return parse_yaml(await request.body())
    raise ProblemError(
        415, "send the job spec as application/json or application/yaml", kind="unsupported-media-type"
    )
