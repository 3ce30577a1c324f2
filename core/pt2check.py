"""``torch.export`` programs (``.pt2``, ``torch.export.save``), checked without torch.

What torch 2.14's ``torch.export.load`` reads, and why each part is checked:

- ``models/<name>.json``: the serialized graph. Node targets are resolved by name (any
  ``torch.*`` attribute), so each is judged against the allowlist, in every graph and in the
  subgraphs of higher-order operators (``cond``, ``while_loop``...). Symbolic shape expressions
  (``expr_str``) are parsed with ``sympy.sympify``, which evaluates Python: they must match a
  strict grammar. ``guards_code`` is compiled into Python when the program runs: it must be empty.
- ``data/weights`` and ``data/constants``: raw tensor bytes described by JSON configs, unless an
  entry says ``use_pickle`` (``torch.load(weights_only=False)``), or the constant is a
  ``custom_obj_``/``opaque_obj_`` (a torchbind pickle, ``pickle.loads``): all refused.
- ``data/sample_inputs/<name>.pt``: a ``torch.save`` pickle, loaded with ``weights_only=True``
  and, should that fail, *again without it*: its pickle may only name tensor-rebuilding globals.
- ``data/aotinductor``, ``extra/``, legacy ``<name>.pt`` weight pickles: refused (compiled code,
  pickles), as is any file a plain ``torch.export.save`` of one program does not write.
"""

from __future__ import annotations

import io
import json
import pickletools
import re
import zipfile
from typing import Any

from core.errors import SpecError, UnsafeModelError
from core.modelcheck import read_member
from core.opcheck import check_op

_FIXED = {
    "archive_format",
    "archive_version",
    "byteorder",
    ".data/version",
    ".data/serialization_id",
    "models/model.json",
    "data/weights/model_weights_config.json",
    "data/constants/model_constants_config.json",
    "data/sample_inputs/model.pt",
}
_REQUIRED = ("archive_format", "models/model.json", "data/sample_inputs/model.pt")
_CONFIGS = {
    "data/weights/model_weights_config.json": "weight_",
    "data/constants/model_constants_config.json": "tensor_",
}
_NUMBERED = re.compile(r"data/weights/weight_[0-9]+|data/constants/tensor_[0-9]+")
HIGHER_ORDER = {"cond", "while_loop", "map_impl", "scan", "wrap_with_set_grad_enabled", "wrap_with_autocast"}
_OPERATOR = "getitem add sub mul floordiv truediv mod neg pos abs pow eq ne lt le gt ge and_ or_ xor not_"
_SYM = "sym_float sym_int sym_max sym_min sym_not sym_ite sym_sqrt sym_sum"
PYTHON_TARGETS = {
    *(f"_operator.{name}" for name in _OPERATOR.split()),
    *(f"torch.{name}" for name in _SYM.split()),
    *(f"math.{name}" for name in ("ceil", "floor", "trunc", "sqrt")),
}
# The globals a sample-input pickle needs to rebuild tensors (torch.load's weights_only world).
_PICKLE_GLOBALS = re.compile(
    r"torch\._utils _rebuild_tensor_v2|torch\._utils _rebuild_parameter|collections OrderedDict"
    r"|torch [A-Za-z0-9]*Storage"
)
_PICKLE_REFUSED = {"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4", "NEWOBJ", "NEWOBJ_EX"}
# sympy.sympify input: symbols (s0, u3), the constructors and shape functions torch serializes.
_SYM_WORDS = """
Symbol Integer Float Rational True False positive integer real nonnegative finite oo zoo
Max Min Abs Eq Ne Lt Le Gt Ge And Or Not Piecewise ceiling floor sqrt
FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift
PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat
TruncToInt RoundToInt RoundDecimal ToFloat Identity
"""
_SYM_NAMES = frozenset(_SYM_WORDS.split())
_SYM_TOKEN = re.compile(
    r"\s+|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|'[a-z]+[0-9]+'|[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?"
    r"|\*\*|//|==|!=|<=|>=|[-+*/%(),=<>]"
)
_SYMBOL = re.compile(r"[a-z]+[0-9]+")


def unique_names(archive: zipfile.ZipFile) -> list[str]:
    """The archive's file names; a name stored twice is refused (readers disagree on which wins)."""
    names = [n for n in archive.namelist() if not n.endswith("/")]
    if len(set(names)) != len(names):
        raise UnsafeModelError("the archive stores a file name twice: refused")
    return names


def check_pt2(archive: zipfile.ZipFile) -> dict[str, Any]:
    """Judge a ``torch.export.save`` archive; a summary, ``SpecError`` or ``UnsafeModelError``."""
    names = unique_names(archive)
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names):
        raise SpecError("not a torch.export archive: expected one top-level folder")
    root = roots.pop()
    files = {n[len(root) + 1 :] for n in names}
    for name in sorted(files):
        if name not in _FIXED and not _NUMBERED.fullmatch(name):
            raise UnsafeModelError(
                f"the archive holds {name}, which torch.export.save of one program does not write "
                "(pickles, compiled code and extra files are refused)"
            )
    missing = [name for name in _REQUIRED if name not in files]
    if missing or read_member(archive, f"{root}/archive_format").strip() != b"pt2":
        raise SpecError(f"not a torch.export archive (missing {', '.join(missing) or 'the pt2 format mark'})")
    for config, prefix in _CONFIGS.items():
        if config in files:
            _check_payloads(_json(archive, f"{root}/{config}"), config, prefix)
    check_tensor_pickle(
        read_member(archive, f"{root}/data/sample_inputs/model.pt"), "data/sample_inputs/model.pt"
    )
    program = _json(archive, f"{root}/models/model.json")
    if not isinstance(program, dict) or program.get("guards_code"):
        raise UnsafeModelError("models/model.json carries guards code (Python compiled at run time): refused")
    operators: set[str] = set()
    _walk(program, operators)
    return {"operators": sorted(operators), "torch_version": program.get("torch_version")}


def _json(archive: zipfile.ZipFile, name: str) -> Any:
    try:
        return json.loads(read_member(archive, name))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpecError(f"{name.split('/', 1)[-1]} is not JSON ({e})") from None


def _check_payloads(config: Any, where: str, prefix: str) -> None:
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise SpecError(f"{where} is not a payload config")
    for fqn, entry in entries.items():
        path = entry.get("path_name") if isinstance(entry, dict) else None
        pickled = not isinstance(entry, dict) or entry.get("use_pickle") is not False
        if pickled or not re.fullmatch(f"{prefix}[0-9]+", str(path)):
            raise UnsafeModelError(
                f"{where}: {fqn!r} is stored as a pickle or an object ({path!r}); "
                "only raw tensors are allowed"
            )


def check_tensor_pickle(data: bytes, where: str) -> None:
    """A ``torch.save`` zip whose pickle names only tensor-rebuilding globals (read, never run)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            pickles = [n for n in unique_names(inner) if n.endswith(".pkl")]
            if len(pickles) != 1 or not pickles[0].endswith("/data.pkl"):
                raise UnsafeModelError(f"{where} is not a plain torch.save file of tensors: refused")
            ops = list(pickletools.genops(read_member(inner, pickles[0])))
    except (zipfile.BadZipFile, ValueError) as e:
        raise UnsafeModelError(f"{where} is not a torch.save file of tensors ({e}): refused") from None
    for opcode, arg, _ in ops:
        if opcode.name in _PICKLE_REFUSED or (
            opcode.name == "GLOBAL" and not _PICKLE_GLOBALS.fullmatch(str(arg))
        ):
            what = arg if opcode.name == "GLOBAL" else opcode.name
            raise UnsafeModelError(f"{where} is a pickle that would call {what}: refused")


def _walk(value: Any, operators: set[str]) -> None:
    """Every node of every graph (subgraphs are nested in their operator's arguments)."""
    if isinstance(value, list):
        for item in value:
            _walk(item, operators)
        return
    if not isinstance(value, dict):
        return
    if isinstance(value.get("target"), str) and "inputs" in value and "outputs" in value:
        check_pt2_target(value["target"], f"models/model.json, node {str(value.get('name'))[:80]!r}")
        operators.add(value["target"])
    if value.get("custom_obj_values") or "as_custom_obj" in value:
        raise UnsafeModelError("models/model.json uses a custom (torchbind) object: refused")
    for key, item in value.items():
        if key == "expr_str":
            check_sym_expr(item)
        elif key == "range_constraints" and isinstance(item, dict):
            for symbol in item:
                check_sym_expr(symbol)
        _walk(item, operators)


def check_pt2_target(target: str, where: str) -> None:
    """A node target as ``torch.export`` serializes it: ``torch.ops.aten.add.Tensor``..."""
    parts = target.split(".")
    if parts[:2] == ["torch", "ops"] and len(parts) >= 4:
        namespace, name = parts[2], parts[3]
        if namespace == "higher_order":
            if name not in HIGHER_ORDER:
                raise UnsafeModelError(
                    f"the model calls the higher-order operator {name} in {where}: refused"
                )
            return
        check_op(f"{namespace}::{name}", where)
    elif target not in PYTHON_TARGETS:
        raise UnsafeModelError(f"the model calls {target[:120]} in {where}: refused")


def check_sym_expr(expr: Any) -> None:
    """Refuse a symbolic expression that is more than symbols, numbers, arithmetic and shape
    functions: ``sympy.sympify`` evaluates the string as Python."""
    text = str(expr)
    position = 0
    while position < len(text):
        token = _SYM_TOKEN.match(text, position)
        name = token.group("name") if token else None
        if token is None or (name is not None and name not in _SYM_NAMES and not _SYMBOL.fullmatch(name)):
            raise UnsafeModelError(
                f"the symbolic shape expression {text[:80]!r} is not plain arithmetic: refused"
            )
        position = token.end()
