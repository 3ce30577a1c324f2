"""Checks of uploaded model programs against the operator allowlist, without torch and without
running, compiling or unpickling anything: the API runs them on upload, the engine again before
it loads a file (core.models.io), since a file may reach the data root by other ways.

- TorchScript: ``torch.jit.load`` compiles the archive's ``code/`` (Python-syntax text) and may
  run a class's ``__setstate__`` while loading, so the text itself is parsed with ``ast`` and
  every operator it can reach is named and judged (core.opcheck). Unknown names are refused.
- ONNX: see ``check_onnx_model``.
- ``torch.export`` programs: see core.pt2check.
"""

from __future__ import annotations

import ast
import zipfile
from dataclasses import dataclass, field
from typing import Any

from core.errors import SpecError, UnsafeModelError
from core.opcheck import check_op, refusal

# TorchScript's global names as its source importer and compiler resolve them, and the operator
# each one stands for (None: a language form, such as a type or a loop helper, that runs none).
_FORMS = "annotate range enumerate zip tuple hasattr complex divmod inf nan infj nanj __annotations__"
_TYPES = (
    "Tensor List Dict Tuple Optional Final NoneType Union Any Device Module Enum NamedTuple "
    "Generator Stream Event Layout Scalar number ScalarType"
)
SCRIPT_GLOBALS: dict[str, str | None] = {
    **dict.fromkeys(_FORMS.split()),
    **dict.fromkeys(_TYPES.split()),
    "unchecked_cast": "prim::unchecked_cast",
    "uninitialized": "prim::Uninitialized",
    "isinstance": "prim::isinstance",
    "getattr": "prim::GetAttr",
    "int": "aten::Int",
    "float": "aten::Float",
    "bool": "aten::Bool",
    "str": "aten::str",
    "len": "aten::len",
    "min": "prim::min",
    "max": "prim::max",
    "abs": "prim::abs",
    "all": "aten::all",
    "any": "aten::any",
    "sum": "aten::sum",
    "list": "aten::list",
    "dict": "aten::dict",
    "round": "aten::round",
    "sorted": "aten::sorted",
    "print": "prim::Print",
    "fork": "prim::fork",
    "awaitable": "prim::fork",
    "RRef": "prim::rpc_async",
    "Future": "prim::fork",
    "Await": "prim::fork",
}
_ROOTS = {"torch", "ops", "__torch__", "CONSTANTS"}
_STATEMENTS = (
    ast.Module, ast.ClassDef, ast.FunctionDef, ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Expr,
    ast.If, ast.For, ast.While, ast.Return, ast.Pass, ast.Break, ast.Continue, ast.Assert,
)  # fmt: skip
_EXPRESSIONS = (
    ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.Attribute,
    ast.Subscript, ast.Slice, ast.List, ast.Tuple, ast.Dict, ast.Constant, ast.Name, ast.keyword,
    ast.ListComp, ast.DictComp, ast.comprehension, ast.Starred, ast.JoinedStr, ast.FormattedValue,
    ast.arguments, ast.arg, ast.expr_context, ast.operator, ast.unaryop, ast.boolop, ast.cmpop,
)  # fmt: skip


def _chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; None when the chain does not start at a name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


@dataclass
class _Archive:
    """What the archive's code defines: qualified classes and functions, and member names."""

    defined: set[str] = field(default_factory=set)
    methods: set[str] = field(default_factory=set)
    members: set[str] = field(default_factory=set)


def _index(trees: dict[str, ast.Module]) -> _Archive:
    index = _Archive()
    for name, tree in trees.items():
        module = name.split("/code/", 1)[1].removesuffix(".py").replace("/", ".")
        for node in tree.body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef):
                index.defined.add(f"{module}.{node.name}")
            if isinstance(node, ast.ClassDef):
                _index_class(node, index)
    return index


def _index_class(node: ast.ClassDef, index: _Archive) -> None:
    for item in node.body:
        if isinstance(item, ast.FunctionDef):
            index.methods.add(item.name)
            index.members.add(item.name)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            index.members.add(item.target.id)
        elif isinstance(item, ast.Assign):  # __annotations__["0"] = ...; __parameters__ = [...]
            for target in item.targets:
                if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
                    index.members.add(str(target.slice.value))
            if isinstance(item.value, ast.List):
                index.members.update(str(e.value) for e in item.value.elts if isinstance(e, ast.Constant))


class _Checker:
    """Walks one code file; every reachable operator goes through core.opcheck."""

    def __init__(self, archive: _Archive, filename: str) -> None:
        self.archive = archive
        self.filename = filename
        self.where = filename
        self.locals: set[str] = set()

    def refuse(self, what: str) -> None:
        raise UnsafeModelError(f"the model's code uses {what} in {self.where}: refused")

    def op(self, name: str) -> None:
        check_op(name, self.where)

    def module(self, tree: ast.Module) -> None:
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    self.where = f"{self.filename}, class {node.name}"
                    self.scope(item, f"{node.name}.")
            else:
                self.where = self.filename
                self.scope(node, "")

    def scope(self, node: ast.AST, prefix: str) -> None:
        if isinstance(node, ast.FunctionDef):
            self.where = f"{self.filename}, {prefix}{node.name}"
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            self.locals = {a.arg for a in args}
            self.locals |= {
                n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
            }
            self.locals |= {a.arg for a in (node.args.vararg, node.args.kwarg) if a is not None}
        else:
            self.locals = set()
        for shadowed in self.locals & (set(SCRIPT_GLOBALS) | _ROOTS):
            self.refuse(f"the global name {shadowed!r} as a variable")
        self.visit(node)

    def visit(self, node: ast.AST) -> None:
        if not isinstance(node, _STATEMENTS + _EXPRESSIONS):
            self.refuse(f"Python syntax TorchScript archives do not contain ({type(node).__name__})")
        if isinstance(node, ast.Call):
            self.call(node)
        elif (
            isinstance(node, ast.Attribute | ast.Name)
            and isinstance(node.ctx, ast.Load)
            and self.reference(node)
        ):
            return
        for child in ast.iter_child_nodes(node):
            self.visit(child)

    def reference(self, node: ast.Attribute | ast.Name) -> bool:
        """Judge a dotted name; True when the whole chain has been judged."""
        chain = _chain(node)
        if chain is None:
            return False  # an attribute of a computed value: its parts are visited
        root = chain[0]
        if root == "torch":
            self.op(_torch_op(chain))
        elif root == "ops":
            self.op(f"{chain[1]}::{chain[2]}" if len(chain) == 3 else ".".join(chain))
        elif root == "__torch__":
            self.archive_name(".".join(chain))
        elif root == "CONSTANTS" or root in self.locals:
            pass  # a constant of the archive, or a field of a local value
        elif root in SCRIPT_GLOBALS:
            if (op := SCRIPT_GLOBALS[root]) is not None:
                self.op(op)
        else:
            self.refuse(f"the unknown name {root!r}")
        return True

    def archive_name(self, name: str) -> None:
        defined = self.archive.defined
        if name not in defined and name.rsplit(".", 1)[0] not in defined:
            self.refuse(f"{name}, which the archive does not define (a C++ class or extension)")

    def call(self, node: ast.Call) -> None:
        func = node.func
        chain = _chain(func)
        if isinstance(func, ast.Attribute) and chain is not None and chain[0] in _ROOTS:
            return  # judged as a reference when the callee is visited
        if isinstance(func, ast.Attribute):
            self.method(func.attr)
        elif isinstance(func, ast.Call) and _getattr_name(func) is not None:
            self.method(str(_getattr_name(func)))
        if isinstance(func, ast.Name) and func.id == "getattr":
            name = _getattr_name(node)
            if name is None:
                self.refuse("getattr with a computed attribute name")
            elif name not in self.archive.members and refusal(f"aten::{name}") is not None:
                self.refuse(f"getattr of {name!r}, which no class of the archive declares")

    def method(self, name: str) -> None:
        """``x.name(...)``: a method of the archive's classes, or the tensor method ``aten::name``."""
        if name in self.archive.methods and refusal(f"aten::{name}") in (None, _NOT_LISTED):
            return
        self.op(f"aten::{name}")


_NOT_LISTED = refusal("aten::__surely_not_an_operator__")


def _getattr_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2:
        arg = node.args[1]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
    return None


def _torch_op(chain: list[str]) -> str:
    """``torch.relu`` is ``aten::relu`` (``torch.autograd.X`` too); ``torch.ops.ns.op`` is ``ns::op``."""
    rest = chain[1:]
    while rest[:1] == ["autograd"]:
        rest = rest[1:]
    if len(rest) == 1:
        return f"aten::{rest[0]}"
    if len(rest) == 3 and rest[0] == "ops":
        return f"{rest[1]}::{rest[2]}"
    return ".".join(chain)  # not an operator name: refused as such


MAX_MEMBER_BYTES = 64 << 20
"""The most a code, JSON or pickle entry of a model archive may unpack to before it is read: such
entries are kilobytes, and a zip entry declaring gigabytes is a bomb aimed at the reader."""


def read_member(archive: zipfile.ZipFile, name: str, limit: int | None = None) -> bytes:
    """An entry's bytes, refused from its declared size (which ``zipfile`` holds it to) first."""
    limit = MAX_MEMBER_BYTES if limit is None else limit
    size = archive.getinfo(name).file_size
    if size > limit:
        raise UnsafeModelError(f"{name} unpacks to {size} bytes, more than the {limit} allowed: refused")
    return archive.read(name)


def check_torchscript_code(archive: zipfile.ZipFile, root: str) -> int:
    """Judge every operator the archive's code can reach; return the number of code files."""
    names = [n for n in archive.namelist() if not n.endswith("/")]
    if len(set(names)) != len(names) or any(not n.startswith(f"{root}/") for n in names):
        raise UnsafeModelError("the archive stores a file twice or has several top-level folders: refused")
    trees: dict[str, ast.Module] = {}
    for name in names:
        if name.startswith(f"{root}/code/") and name.endswith(".py"):
            if not name.startswith((f"{root}/code/__torch__/", f"{root}/code/__torch__.py")):
                raise UnsafeModelError(f"unexpected code file {name} in the archive: refused")
            try:
                trees[name] = ast.parse(read_member(archive, name).decode("utf-8"), filename=name)
            except (SyntaxError, UnicodeDecodeError, ValueError) as e:
                raise SpecError(f"{name} is not TorchScript code ({type(e).__name__})") from None
    index = _index(trees)
    for name, tree in trees.items():
        _Checker(index, name.removeprefix(f"{root}/")).module(tree)
    return len(trees)


# ---------------------------------------------------------------- ONNX

DEFAULT_DOMAINS = ("", "ai.onnx")
_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL


def check_onnx_model(model: Any) -> dict[str, Any]:
    """Judge an ``onnx.ModelProto``: only default-domain operators (or local functions made of
    them), in every graph and subgraph (If/Loop/Scan bodies), and no tensor stored outside the
    file (ONNX Runtime would read the path it names). Returns a summary."""
    functions = {(f.domain, f.name): f for f in model.functions}
    ops: set[str] = set()
    _check_graph(model.graph, "graph", functions, ops, set())
    domains = {o.domain for o in model.opset_import}
    return {"operators": sorted(ops), "opset_domains": sorted(domains), "ir_version": model.ir_version}


def _check_graph(graph: Any, where: str, functions: dict[Any, Any], ops: set[str], seen: set[Any]) -> None:
    for tensor in list(graph.initializer) + [s.values for s in graph.sparse_initializer]:
        _check_tensor(tensor, f"{where} initializer {tensor.name!r}")
    _check_nodes(graph.node, where, functions, ops, seen)


def _check_nodes(nodes: Any, where: str, functions: dict[Any, Any], ops: set[str], seen: set[Any]) -> None:
    for node in nodes:
        here = f"{where}, node {node.name or node.op_type!r}"
        key = (node.domain, node.op_type)
        if node.domain not in DEFAULT_DOMAINS:
            if key not in functions:
                raise UnsafeModelError(
                    f"the model uses the custom operator {node.domain}::{node.op_type} in {here}: "
                    "only the default ONNX domain is allowed"
                )
            if key not in seen:  # a local function: judge its body once (it may call itself)
                seen.add(key)
                _check_nodes(functions[key].node, f"function {node.op_type}", functions, ops, seen)
        ops.add(node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}")
        for attribute in node.attribute:
            tensors = [*attribute.tensors, *(s.values for s in attribute.sparse_tensors)]
            if attribute.HasField("t"):
                tensors.append(attribute.t)
            if attribute.HasField("sparse_tensor"):
                tensors.append(attribute.sparse_tensor.values)
            for tensor in tensors:
                _check_tensor(tensor, f"{here} attribute {attribute.name!r}")
            for graph in [attribute.g, *attribute.graphs] if attribute.HasField("g") else attribute.graphs:
                _check_graph(graph, f"{here} subgraph {attribute.name!r}", functions, ops, seen)


def _check_tensor(tensor: Any, where: str) -> None:
    if tensor.data_location == _EXTERNAL or len(tensor.external_data) > 0:
        raise UnsafeModelError(
            f"{where} keeps its data in an external file; an uploaded ONNX model must be self-contained"
        )


def read_onnx(path: Any) -> tuple[Any, dict[str, Any]]:
    """A checked ``onnx.ModelProto`` and its summary; ``SpecError`` when the file is not ONNX,
    ``UnsafeModelError`` when its operators or data locations are refused."""
    import onnx  # late: only ONNX files need it
    from google.protobuf.message import DecodeError

    try:
        # Never follow external data: the check below refuses files that have any.
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as e:
        raise SpecError(f"not an ONNX model ({type(e).__name__})") from None
    summary = check_onnx_model(model)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise SpecError(f"not a valid ONNX model: {first}") from None
    return model, summary
