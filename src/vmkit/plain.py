"""Value classes without `dataclasses`: the records `vmkit ls` reads (model, process,
machine.status) are plain classes with `__slots__`, because importing `dataclasses`
(which loads `inspect`) and building each dataclass cost `ls` ~20 ms of its start-up."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs `vmkit ls` ~5 ms
if TYPE_CHECKING:
    from typing import Any


class Plain:
    """Equality and repr over the fields (`_fields`, which are also the `__slots__`), in
    declaration order, as @dataclass gave."""

    _fields: tuple[str, ...] = ()
    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:  # (and so unhashable, as a dataclass)
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._fields)

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({inner})"

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict, its lists and dicts copied (as `dataclasses.asdict`)."""
        return {f: _copy(getattr(self, f)) for f in self._fields}


class Frozen(Plain):
    """A value that is not changed after it is made: hashable (as a frozen dataclass)."""

    __slots__ = ()

    if not TYPE_CHECKING:  # hidden from mypy, which then still flags unknown attributes

        def __setattr__(self, name: str, value: Any) -> None:
            if hasattr(self, name):  # set once, in __init__
                raise AttributeError(f"{type(self).__name__}.{name} cannot be changed (frozen)")
            object.__setattr__(self, name, value)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, f) for f in self._fields))


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value
