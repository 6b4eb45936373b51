"""Typed records validated by plain functions: the spec layer's base, without pydantic.

Importing pydantic and building the spec's models cost 150-300 ms on every `vmkit run`,
`create`, `start` and `restore`, most of the time before the hypervisor forked; validating
a spec takes well under a millisecond. A record here is a class with annotated fields, each
made by `field(conv, ...)`: `conv` turns the input into the field's value or raises
ValueError with the message the user sees. Every bad field is reported at once, each
with its location (`disks[0].size`), as `SpecError`. `@check` methods run after the
fields, for rules across fields. Assignment is validated too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar, dataclass_transform, get_args

from vmkit.errors import SpecError

Problems = list[tuple[str, str]]
Ctx = dict[str, Any]
UNKNOWN_FIELD = "unknown field (see `vmkit spec schema` for the fields allowed)"
_MISSING: Any = object()
_BAD: Any = object()
R = TypeVar("R", bound="Record")


class Conv:
    """Turns one input value into a field's value; `schema` is its JSON schema."""

    def __init__(self, fn: Callable[[Any, Ctx], Any], schema: dict[str, Any] | None = None) -> None:
        self.fn = fn
        self._schema = schema or {}

    def __call__(self, value: Any, ctx: Ctx, loc: str, problems: Problems) -> Any:
        try:
            return self.fn(value, ctx)
        except ValueError as exc:
            problems.append((loc, str(exc)))
            return _BAD

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return dict(self._schema)


def conv(fn: Callable[[Any], Any], schema: dict[str, Any] | None = None) -> Conv:
    """A converter from a one-argument function that raises ValueError."""
    return Conv(lambda value, _ctx: fn(value), schema)


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isascii():
        try:
            return int(value)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a whole number")


def integer(*, ge: int | None = None, gt: int | None = None) -> Conv:
    def check(value: Any) -> int:
        n = _int(value)
        if ge is not None and n < ge:
            raise ValueError(f"{n} is too small; use {ge} or more")
        if gt is not None and n <= gt:
            raise ValueError(f"{n} is too small; use more than {gt}")
        return n

    schema: dict[str, Any] = {"type": "integer"}
    if ge is not None:
        schema["minimum"] = ge
    if gt is not None:
        schema["exclusiveMinimum"] = gt
    return conv(check, schema)


def _float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a number")


_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ValueError(f"{value!r} is not true or false")


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"{value!r} is not text; quote it")


def _path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    if isinstance(value, str):
        return Path(value)
    raise ValueError(f"{value!r} is not a path")


def _mapping(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise ValueError(f"{value!r} is not a mapping")


FLOAT = conv(_float, {"type": "number"})
BOOL = conv(_bool, {"type": "boolean"})
STR = conv(_str, {"type": "string"})
PATH = conv(_path, {"type": "string", "format": "path"})
MAPPING = conv(_mapping, {"type": "object"})


def literal(alias: Any) -> Conv:
    """A converter for a `Literal[...]` alias: one of its values, exactly."""
    allowed: tuple[Any, ...] = get_args(alias)

    def check(value: Any) -> Any:
        if isinstance(value, str) and value in allowed:
            return value
        raise ValueError(f"{value!r} is not allowed; use {' or '.join(map(repr, allowed))}")

    return conv(check, {"enum": list(allowed)})


def then(first: Conv, rule: Callable[[Any], Any]) -> Conv:
    """`first`, then `rule` on its result (both may refuse)."""

    def run(value: Any, ctx: Ctx) -> Any:
        return rule(first.fn(value, ctx))

    return _Derived(run, first)


class _Derived(Conv):
    def __init__(self, fn: Callable[[Any, Ctx], Any], inner: Conv) -> None:
        super().__init__(fn)
        self.inner = inner

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return self.inner.schema(defs)


class Maybe(Conv):
    """None, or what `inner` takes."""

    def __init__(self, inner: Conv) -> None:
        super().__init__(inner.fn)
        self.inner = inner

    def __call__(self, value: Any, ctx: Ctx, loc: str, problems: Problems) -> Any:
        return None if value is None else self.inner(value, ctx, loc, problems)

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [self.inner.schema(defs), {"type": "null"}]}


class ListOf(Conv):
    """A list (or tuple) whose items `item` takes; each bad item is reported by index."""

    def __init__(self, item: Conv) -> None:
        super().__init__(lambda v, _c: v)
        self.item = item

    def __call__(self, value: Any, ctx: Ctx, loc: str, problems: Problems) -> Any:
        if not isinstance(value, list | tuple):
            problems.append((loc, f"{value!r} is not a list"))
            return _BAD
        before = len(problems)
        out = [self.item(v, ctx, f"{loc}[{i}]", problems) for i, v in enumerate(value)]
        return _BAD if len(problems) > before else out

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "array", "items": self.item.schema(defs)}


class AnyOf(Conv):
    """The first of `choices` that takes the value (for `str | list[str]`)."""

    def __init__(self, *choices: Conv) -> None:
        super().__init__(lambda v, _c: v)
        self.choices = choices

    def __call__(self, value: Any, ctx: Ctx, loc: str, problems: Problems) -> Any:
        first: Problems = []
        for choice in self.choices:
            tried: Problems = []
            out = choice(value, ctx, loc, tried)
            if not tried:
                return out
            first = first or tried
        problems.extend(first)
        return _BAD

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [c.schema(defs) for c in self.choices]}


class Nested(Conv):
    """A record inside a record: a mapping of its fields, or an instance as it is."""

    def __init__(self, cls: type[Record]) -> None:
        super().__init__(lambda v, _c: v)
        self.cls = cls

    def __call__(self, value: Any, ctx: Ctx, loc: str, problems: Problems) -> Any:
        return self.cls.validate(value, ctx, loc, problems)

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        name = self.cls.__name__
        if name not in defs:
            defs[name] = {}  # a placeholder first: records may refer to each other
            defs[name] = self.cls.schema_of(defs)
        return {"$ref": f"#/$defs/{name}"}


class Tagged(Conv):
    """One of several records, told apart by the `tag` field (default `default`)."""

    def __init__(self, tag: str, default: str, kinds: dict[str, type[Record]], what: str):
        super().__init__(lambda v, _c: v)
        self.tag, self.default, self.kinds, self.what = tag, default, kinds, what

    def __call__(self, value: Any, ctx: Ctx, loc: str, problems: Problems) -> Any:
        if isinstance(value, tuple(self.kinds.values())):
            return value
        if not isinstance(value, dict):
            problems.append((loc, f"{value!r} is not a mapping of fields"))
            return _BAD
        kind = value.get(self.tag, self.default)
        cls = self.kinds.get(kind) if isinstance(kind, str) else None
        if cls is None:
            names = ", ".join(map(repr, self.kinds))
            problems.append((loc, f"{kind!r} is not {self.what}; use {names}"))
            return _BAD
        return cls.validate(value, ctx, loc, problems)

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"oneOf": [Nested(cls).schema(defs) for cls in self.kinds.values()]}


class Field:
    """One field: its converter, its default (or factory) and its description."""

    __slots__ = ("conv", "default", "doc", "factory")

    def __init__(
        self, conv: Conv, default: Any, factory: Callable[[], Any] | None, doc: str
    ) -> None:
        self.conv, self.default, self.factory, self.doc = conv, default, factory, doc

    @property
    def required(self) -> bool:
        return self.default is _MISSING and self.factory is None

    def initial(self) -> Any:
        return self.factory() if self.factory is not None else self.default


def field(
    conv: Conv,
    *,
    default: Any = _MISSING,
    factory: Callable[[], Any] | None = None,
    doc: str = "",
) -> Any:
    """Declare a field: `name: int = field(integer(ge=1), default=1, doc="...")`."""
    return Field(conv, default, factory, doc)


def check(method: Callable[[Any], None]) -> Callable[[Any], None]:
    """Mark a method as a rule across fields; it raises ValueError when broken."""
    method.__record_check__ = True  # type: ignore[attr-defined]
    return method


def _json(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if is_date(value):
        return value.isoformat()
    return value


def is_date(value: object) -> bool:
    """A datetime.date (YAML reads `2024-01-01` as one), without importing datetime (~2 ms
    of a restore): a date exists only once something has imported the module."""
    module = sys.modules.get("datetime")
    return module is not None and isinstance(value, module.date)


@dataclass_transform(kw_only_default=True, field_specifiers=(field,))
class Record:
    """Base of the spec's records; subclasses declare fields with `field()`."""

    __fields__: ClassVar[dict[str, Field]] = {}
    __checks__: ClassVar[tuple[Callable[[Any], None], ...]] = ()

    def __init_subclass__(cls) -> None:
        fields = dict(cls.__fields__)
        # not inspect.get_annotations: importing inspect costs more than the whole spec layer
        for name in cls.__dict__.get("__annotations__", {}):  # noqa: RUF063
            value = cls.__dict__.get(name)
            if isinstance(value, Field):
                fields[name] = value
                delattr(cls, name)
        cls.__fields__ = fields
        found = [m for m in cls.__dict__.values() if getattr(m, "__record_check__", False)]
        cls.__checks__ = (*cls.__checks__, *found)

    def __init__(self, **data: Any) -> None:
        made = type(self).parse(data)
        object.__setattr__(self, "__dict__", made.__dict__)

    @classmethod
    def parse(cls: type[R], data: Any, ctx: Ctx | None = None) -> R:
        """The record for `data`, or SpecError listing every problem."""
        problems: Problems = []
        made = cls.validate(data, ctx or {}, "", problems)
        if problems:
            raise SpecError(problems)
        return made

    @classmethod
    def validate(cls: type[R], data: Any, ctx: Ctx, loc: str, problems: Problems) -> R:
        """The record for `data` (a mapping), adding every problem found to `problems`."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            problems.append((loc, f"{data!r} is not a mapping of fields"))
            return _BAD  # type: ignore[no-any-return]
        before = len(problems)
        prefix = f"{loc}." if loc else ""
        for key in data:
            if key not in cls.__fields__:
                problems.append((f"{prefix}{key}", UNKNOWN_FIELD))
        values: dict[str, Any] = {}
        for name, spec in cls.__fields__.items():
            if name in data:
                values[name] = spec.conv(data[name], ctx, prefix + name, problems)
            elif spec.required:
                problems.append((prefix + name, "is required"))
            else:
                values[name] = spec.initial()
        if len(problems) > before:
            return _BAD  # type: ignore[no-any-return]
        made = object.__new__(cls)
        object.__setattr__(made, "__dict__", values)
        try:
            made._check()
        except ValueError as exc:
            problems.append((loc, str(exc)))
            return _BAD  # type: ignore[no-any-return]
        return made

    def _check(self) -> None:
        for rule in self.__checks__:
            rule(self)

    def __setattr__(self, name: str, value: Any) -> None:
        spec = self.__fields__.get(name)
        if spec is None:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        problems: Problems = []
        new = spec.conv(value, {}, name, problems)
        if problems:
            raise SpecError(problems)
        old = self.__dict__[name]
        self.__dict__[name] = new
        try:
            self._check()
        except ValueError as exc:
            self.__dict__[name] = old
            raise SpecError([(name, str(exc))]) from None

    def replace(self: R, **changes: Any) -> R:
        """A copy with `changes` (validated like any input)."""
        return type(self).parse({**self.__dict__, **changes})

    def to_json(self) -> dict[str, Any]:
        return {name: _json(value) for name, value in self.__dict__.items()}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({inner})"

    @classmethod
    def schema_of(cls, defs: dict[str, Any]) -> dict[str, Any]:
        props: dict[str, Any] = {}
        for name, spec in cls.__fields__.items():
            prop = spec.conv.schema(defs)
            if spec.doc:
                prop["description"] = spec.doc
            if not spec.required and spec.factory is None:
                prop["default"] = _json(spec.default)
            props[name] = prop
        out: dict[str, Any] = {"title": cls.__name__, "type": "object"}
        if cls.__doc__:
            out["description"] = " ".join(cls.__doc__.split())
        out["properties"] = props
        out["required"] = [n for n, s in cls.__fields__.items() if s.required]
        out["additionalProperties"] = False
        return out

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON schema of this record, every nested record under `$defs`."""
        defs: dict[str, Any] = {}
        top = cls.schema_of(defs)
        return {**top, "$defs": dict(sorted(defs.items()))} if defs else top
