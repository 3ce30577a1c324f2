"""The dashboard's YAML (static/js/yaml.js, over the vendored eemeli/yaml), run in the browser:
what it writes the server reads back as the same data, and it finds a field's line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from api.documents import parse_yaml
from tests.api.support import TINY
from tests.dashboard.conftest import VIEWPORT, Live

# Strings that a careless writer leaves plain and a YAML 1.1 reader (PyYAML, the server's) reads
# as something else: numbers, booleans, null, octal, sexagesimal, merge keys, and text whose
# characters YAML treats specially.
TRICKY = [
    *("1e-3", "1E+3", "1.0", ".5", "007", "0o7", "0x1F", "0b101", "1_000", "1:20", "+1", "-0"),
    *("yes", "No", "ON", "off", "y", "n", "true", "False", "null", "Null", "~", ""),
    *(".inf", "-.Inf", ".NaN", "2001-12-14", "<<", "=", "-", "?", ":", "a: b", "- x", "#x", "x #y"),
    *("[x]", "{x}", "x, y", "@x", "`x", "%x", "!x", "&x", "*x", "|", "> x", "'q'", '"q"', "---"),
    *(" lead", "trail ", "two\nlines", "ends\n", "tab\tx", "\ttab", "é ünïcode 🎉", "back\\slash"),
    *("line\u2028sep", "nel\x85x", "bom\ufeff", "del\x7f", "bell\x07", "x" * 300),
]
SPEC: dict[str, Any] = {
    "name": "round-trip",
    "nested": {"a": {"b": {"c": [1, [2, [3, []]], {}]}}},
    "losses": [{"kind": "kd", "weight": 0.7, "temperature": 2.5}, {"kind": "ce", "weight": 0.3}],
    "floats": [0.1, 0.1 + 0.2, 1e-7, 5e-324, 1.5e300, 1e21, 1e20, -0.0001, 123.456, 2.0, -0.0],
    "ints": [0, 1, -1, 2**53 - 1, -(2**31), 123456789012],
    "flags": [True, False, None],
    "empty": {"string": "", "list": [], "map": {}},
    "strings": TRICKY,
    "keys": {s: s for s in TRICKY},  # the same strings as keys
    # and in flow collections (`[a, b]`, `{a: b}`), where `,[]{}` matter too
    "flow": [TRICKY[i : i + 3] for i in range(0, len(TRICKY), 3)],
    "pairs": [{s: s} for s in TRICKY],
}
WRITE = "async (value) => (await import('./ui/js/yaml.js')).toYaml(value)"
LINE = "async ([text, field]) => (await import('./ui/js/yaml.js')).lineOf(text, field)"


@pytest.fixture(scope="module")
def page(browser: Browser, live: Live) -> Iterator[Page]:
    """The dashboard's page (its login page: yaml.js needs no token), to run its modules in."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{live.base}/#/login")
    page.get_by_test_id("login-form").wait_for()
    yield page
    context.close()


def write(page: Page, value: Any) -> str:
    text: str = page.evaluate(WRITE, value)
    return text


def test_what_the_dashboard_writes_the_server_reads_back_unchanged(page: Page) -> None:
    text = write(page, SPEC)
    assert parse_yaml(text.encode()) == SPEC  # the server's reader (PyYAML, YAML 1.1)
    # strings stay strings, and floats stay floats, but for 2.0 and -0.0: the browser holds every
    # number as a double, and writes those as 2 and 0, which come back as equal ints
    back = parse_yaml(text.encode())
    assert all(isinstance(s, str) for s in back["strings"]) and back["strings"] == TRICKY
    assert [type(x) for x in back["floats"]] == [float] * 9 + [int, int]
    assert "  - 1.0e-7\n" in text and "  - 1.0e+21\n" in text  # PyYAML's float form
    assert "  - {kind: kd, weight: 0.7, temperature: 2.5}\n" in text  # short ones on one line


@pytest.mark.parametrize("name", ["007", "1e-3", "yes", "null", "1_000", "0x1F", "1.0"])
def test_a_spec_the_dashboard_writes_validates_as_the_spec_it_came_from(
    page: Page, live: Live, name: str
) -> None:
    """Through the API: the job page's "Edit as a new job" writes a job's spec as YAML, and the
    service must read the same spec from it (a name like `yes` or `007` stays that name)."""
    spec = {
        **TINY,
        "name": name,
        "distill": {
            "epochs": 3,
            "optimizer": {"kind": "adamw", "lr": 1e-7, "weight_decay": 0.0},
            "losses": [{"kind": "kd", "weight": 0.7, "temperature": 2.5}, {"kind": "ce", "weight": 0.3}],
        },
    }
    headers = {"Authorization": f"Bearer {live.token}"}
    as_json = httpx.post(f"{live.base}/v1/spec/validate", json=spec, headers=headers)
    assert as_json.status_code == 200, as_json.text
    normalized = as_json.json()["spec"]
    text = write(page, normalized)  # what the page shows, and "Edit as a new job" starts from
    as_yaml = httpx.post(
        f"{live.base}/v1/spec/validate",
        content=text,
        headers={**headers, "Content-Type": "application/yaml"},
    )
    assert as_yaml.status_code == 200, (text, as_yaml.text)
    assert as_yaml.json()["spec"] == normalized


EXAMPLE = """\
name: x
distill:
  epochs: 2
  losses:
    - kind: kd
      temperature: -1
    - {kind: ce,
       weight: 2}
teacher:
  train: &train
    epochs: 3
teachers:
  - train: *train
student: {model: {kind: mlp, hidden: [16, 16]}}
"""


@pytest.mark.parametrize(
    ("field", "line"),
    [
        ("distill.losses.0.temperature", 6),  # a key in a block mapping
        ("distill.losses.1.weight", 8),  # in a flow mapping over two lines
        ("distill.losses.0", 5),  # a list item: its dash
        ("student.model.hidden.1", 14),  # inside flow collections on one line
        ("teachers.0.train.epochs", 11),  # through an alias: where the value is written
        ("distill.losses.0.weight", 5),  # absent: its parent, where it would go
        ("distill.losses.5", 4),  # no such item: the list
        ("data.kind", None),  # nothing of it in the text
        ("(spec)", None),  # the whole spec
        ("body", None),  # the document itself (its syntax errors name their line)
    ],
)
def test_a_fields_line_is_found_in_the_text(page: Page, field: str, line: int | None) -> None:
    assert page.evaluate(LINE, [EXAMPLE, field]) == line
