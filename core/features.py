"""Intermediate features by module path, captured with forward hooks (for hint and attention losses)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from core.errors import SpecError


def resolve_module(root: nn.Module, path: str, who: str) -> nn.Module:
    try:
        return root.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in root.named_modules() if name and name.count(".") < 2]
        raise SpecError(
            f"{who} has no module {path!r}; its modules include: {', '.join(names[:40])}"
        ) from None


class FeatureTaps:
    """Records the outputs of the named submodules on every forward pass."""

    def __init__(self, root: nn.Module, paths: Iterable[str], who: str) -> None:
        self.values: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []
        for path in sorted(set(paths)):
            module = resolve_module(root, path, who)
            self._handles.append(module.register_forward_hook(self._recorder(path)))

    def _recorder(self, path: str) -> Callable[[nn.Module, object, object], None]:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if not isinstance(output, Tensor):
                raise SpecError(f"module {path!r} does not output a single tensor")
            self.values[path] = output

        return hook

    def __getitem__(self, path: str) -> Tensor:
        return self.values[path]

    def clear(self) -> None:
        self.values.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
