"""A store's ``storage_options`` declared once: names, types, defaults, environment variables and secrets.

Every store reads its ``storage_options`` the same way: refuse names it does not take (naming the closest it
does), check each value's type, fall back to environment variables for what was not given, then to
defaults. :class:`StorageOptions` does all of it from a class body, and raises trackpoint's own errors
naming the store, the option and what to do.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import FrozenInstanceError, dataclass
from types import MappingProxyType
from typing import (
    Any,
    ClassVar,
    Literal,
    NoReturn,
    Self,
    TypeVar,
    Union,
    dataclass_transform,
    get_args,
    get_origin,
    get_type_hints,
    overload,
)

from trackpoint.errors import REDACTED, ArgumentTypeError, BackendOptionError, PluginError, redact

__all__ = ["StorageOptions", "option"]

T = TypeVar("T")


class _Missing:
    """The default of an option declared without one: it is required."""

    def __repr__(self) -> str:
        return "<required>"


_MISSING: Any = _Missing()
#: How environment variables spell a boolean (compared lower-case).
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class _Declared:
    """What :func:`option` was given, kept as the class attribute until the class is made."""

    default: Any
    env: tuple[str, ...]
    secret: bool
    check: Callable[[Any], Any] | None


@overload
def option(
    *,
    default: T,
    env: str | Iterable[str] = (),
    secret: bool = False,
    check: Callable[[Any], Any] | None = None,
) -> T: ...
@overload
def option(
    *, env: str | Iterable[str] = (), secret: bool = False, check: Callable[[Any], Any] | None = None
) -> Any: ...
def option(
    *,
    default: Any = _MISSING,
    env: str | Iterable[str] = (),
    secret: bool = False,
    check: Callable[[Any], Any] | None = None,
) -> Any:
    """Declare one option of a :class:`StorageOptions` class beyond its type and default.

    ``name: type = default`` declares an option with neither; ``name: type = option(...)`` adds them.

    Parameters
    ----------
    default
        The value when the option is neither given nor set in the environment. Without one the option is
        required: resolving options without it raises :class:`~trackpoint.errors.BackendOptionError`.
    env
        Environment variables read, in order, when ``storage_options`` do not give the option; the first
        one set to a non-empty value wins. Their text is converted to the option's type: kept for ``str``,
        ``int`` and ``float`` parsed, ``bool`` from ``1``/``true``/``yes``/``on`` and
        ``0``/``false``/``no``/``off``, a ``Literal`` matched by its values' text. For any other type
        ``check`` receives the text and returns the value.
    secret
        The value is a credential: never shown in error messages nor in the ``repr`` of the options.
    check
        Called with every value given or read from the environment (never with the default), after its
        type was checked; returns the value to keep (the same or a converted one). It refuses a value by
        raising ``ValueError`` or ``TypeError`` whose message gives the reason ("must be positive");
        trackpoint adds the option, where the value came from, the value unless it is secret, and what to
        do. Builtin conversions (``int``, ``bytes.fromhex``, ``date.fromisoformat``) work as they are.
        The message of a secret option's refusal has the value replaced by ``<redacted>`` (or, when that
        cannot be done reliably, its reason left out), and the exception is not chained.

    Returns
    -------
    Any
        A marker the class reads when it is made; typed as the default so that type checkers accept
        ``timeout: float = option(default=30.0, env="MY_TIMEOUT")``.

    .. versionadded:: 0.2
    """
    names = (env,) if isinstance(env, str) else tuple(env)
    if not all(isinstance(n, str) and n for n in names):
        raise PluginError(f"option(env=...) takes names of environment variables, got {env!r}")
    return _Declared(default, names, bool(secret), check)


@dataclass(frozen=True, slots=True)
class _Field:
    """One declared option, as the class resolves it."""

    name: str
    #: Accepted classes; ``None`` with no ``literals``: any value.
    classes: tuple[type, ...] | None
    literals: tuple[object, ...]
    default: Any
    env: tuple[str, ...]
    secret: bool
    check: Callable[[Any], Any] | None

    @property
    def kind(self) -> str:
        """What a value must be, in words: ``"a str"``, ``"an int or a float"``, ``"one of 'a', 'b'"``."""
        words = [f"{'an' if c.__name__[0] in 'aeiou' else 'a'} {c.__name__}" for c in self.classes or ()]
        if self.literals:
            words.append(("one of " if len(self.literals) > 1 else "") + ", ".join(map(repr, self.literals)))
        return " or ".join(words)


def _shape(owner: str, name: str, annotation: Any) -> tuple[tuple[type, ...] | None, tuple[object, ...]]:
    """The classes and literal values an annotation accepts (``None`` stands for "not given" and is left out)."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = get_args(annotation)
    else:
        members = (annotation,)
    classes: list[type] = []
    literals: list[object] = []
    for member in members:
        origin = get_origin(member)
        if member is Any or member is object:
            return None, ()
        if member is None or member is type(None):
            continue
        if origin is Literal:
            literals.extend(get_args(member))
        elif isinstance(origin, type):  # dict[str, Any]: a dict
            classes.append(origin)
        elif isinstance(member, type):
            classes.append(member)
        else:
            raise PluginError(
                f"{owner}.{name}: cannot check values against {member!r}; annotate the option with classes, "
                "their unions, a Literal or Any"
            )
    return tuple(classes), tuple(literals)


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(option,))
class StorageOptions:
    """The ``storage_options`` a store takes, declared as annotated class attributes and resolved in one call.

    Subclass it with the store's name, one class attribute per option, annotated with its type, and
    resolve the options of each backend with :meth:`from_storage_options`::

        class TinyOptions(StorageOptions, store="tinyobj"):
            endpoint: str = option(env="TINYOBJ_ENDPOINT")  # required: given, or from the environment
            token: str | None = option(default=None, env="TINYOBJ_TOKEN", secret=True)
            timeout: float = 30.0
            anon: bool = False

        opts = TinyOptions.from_storage_options(options.storage_options)
        client = TinyClient(opts.endpoint, token=opts.token, timeout=opts.timeout)

    Each value comes from ``storage_options`` if given there (``None`` counts as not given), else from the
    first of its environment variables that is set (see :func:`option`), else from its default; an option
    without a default is required. Types are checked against the annotation: classes and their unions
    (``int`` values are accepted and converted for ``float``, ``bool`` ones are not for numbers), ``Literal``
    values, ``X | None``, ``Any`` (anything). The class is frozen and compares by value; its ``repr`` shows
    the options that are set, secrets as ``<redacted>`` and passed-through options by name only.

    Parameters
    ----------
    store
        Class keyword: the store's name, which every message starts with (``"azure: ..."``).
    env_unless
        Class keyword: names of options any one of which, given in ``storage_options``, leaves every
        environment variable unread. For options that name the account or endpoint: the environment's key
        belongs to the environment's account, and must not be sent to another one named in code.

    Raises
    ------
    PluginError
        When the class is made: no store name, an option named like a method of this class
        (``from_storage_options``, ``passthrough_names``), an annotation that cannot be checked,
        environment variables for a type that cannot be read from text without ``check``, ``env_unless``
        naming no option.

    Notes
    -----
    For implementers: a store that hands ``storage_options`` to a client library whose keywords are known
    only once it is imported names them by overriding :meth:`passthrough_names`; those names are accepted
    without a check and their values are left to the library. Annotations are read with
    ``typing.get_type_hints``, so the names they use must be importable from the class's module at run time
    (not only under ``TYPE_CHECKING``).

    .. versionadded:: 0.2
    """

    _store: ClassVar[str] = ""
    _fields: ClassVar[Mapping[str, _Field]] = MappingProxyType({})
    _env_unless: ClassVar[frozenset[str]] = frozenset()
    # An instance's own, set with object.__setattr__ (instances are frozen); declared as class variables so
    # that neither typing.get_type_hints nor a type checker takes it for an option.
    _passthrough: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def __init_subclass__(
        cls, *, store: str | None = None, env_unless: Iterable[str] | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        owner = cls.__qualname__
        if store is not None:
            if not isinstance(store, str) or not store:
                raise PluginError(f"{owner}: store must be the store's name, got {store!r}")
            cls._store = store
        if not cls._store:
            raise PluginError(f"{owner}: name the store: class {cls.__name__}(StorageOptions, store='mystore')")
        try:
            hints = get_type_hints(cls)
        except (NameError, TypeError) as exc:
            raise PluginError(
                f"{owner}: the annotations of its options cannot be read ({exc}); import the names they use at "
                "run time in the class's module, not only under TYPE_CHECKING"
            ) from exc
        fields: dict[str, _Field] = {}
        for name, annotation in hints.items():
            if annotation is ClassVar or get_origin(annotation) is ClassVar:
                continue
            if hasattr(StorageOptions, name):
                raise PluginError(f"{owner}.{name}: the name is taken by StorageOptions itself; rename the option")
            declared = getattr(cls, name, _MISSING)
            if not isinstance(declared, _Declared):
                declared = _Declared(declared, (), False, None)
            classes, literals = _shape(owner, name, annotation)
            readable = classes is None or literals or {str, bool, int, float} & set(classes)
            if declared.env and not readable and declared.check is None:
                raise PluginError(
                    f"{owner}.{name}: environment variables hold text, and {annotation!r} cannot be read from "
                    "text; give option(check=...) converting it"
                )
            fields[name] = _Field(
                name, classes, literals, declared.default, declared.env, declared.secret, declared.check
            )
        if env_unless is not None:
            unless = frozenset(env_unless)
            if unknown := sorted(unless - fields.keys()):
                raise PluginError(f"{owner}: env_unless names {unknown}, which are not its options")
            cls._env_unless = unless
        cls._fields = MappingProxyType(fields)

    def __init__(self, **values: Any) -> None:
        """Options given in code: checked as ``storage_options`` are, without reading the environment."""
        self._fill(values, {})

    # ------------------------------------------------------------ the declaration
    @classmethod
    def passthrough_names(cls) -> Collection[str]:
        """Names of further options the store takes unchecked, to pass on (none by default).

        Override it for a store that hands ``storage_options`` to a client library whose keywords are
        known only at run time (its constructor's parameters). Called only when ``storage_options`` hold a
        name that is not declared, so it may import the library.

        Returns
        -------
        Collection[str]
            The names, accepted besides the declared options and offered in "did you mean" hints.
        """
        return ()

    @classmethod
    def _environment_variables(cls) -> dict[str, tuple[str, ...]]:
        """The environment variables of each option that has some, in the order they are read (for tests)."""
        return {name: f.env for name, f in cls._fields.items() if f.env}

    # ------------------------------------------------------------ resolving
    @classmethod
    def from_storage_options(
        cls, storage_options: Mapping[str, Any], *, environ: Mapping[str, str] | None = None
    ) -> Self:
        """The options of one backend: ``storage_options``, then the environment, then the defaults.

        Parameters
        ----------
        storage_options
            ``CheckpointOptions.storage_options`` as the backend's factory received them.
        environ
            The environment to read; ``None`` (the default): ``os.environ`` as it is now.

        Returns
        -------
        StorageOptions
            An instance of this class, every option checked.

        Raises
        ------
        BackendOptionError
            A name the store does not take (with the closest it does), a value of the wrong type, refused
            by ``check`` or unreadable from its environment variable. The message names the store, the
            option, where its value came from and what to do, never a secret's value; a secret's refusal
            is raised without the exception ``check`` raised. Also a required option neither given nor
            set in the environment (the message names both ways).
        """
        resolved = cls.__new__(cls)
        resolved._fill(storage_options, os.environ if environ is None else environ)
        return resolved

    def _fill(self, given: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        cls = type(self)
        store = cls._store
        if not isinstance(given, Mapping):
            raise ArgumentTypeError(
                f"{store}: storage options must be a mapping of option names to values, got {type(given).__name__}"
            )
        passthrough = {str(k): v for k, v in given.items() if k not in cls._fields}
        if passthrough:
            others = frozenset(cls.passthrough_names())
            if unknown := [k for k in passthrough if k not in others]:
                from trackpoint._suggest import with_hints

                valid = sorted(cls._fields.keys() | others)
                raise BackendOptionError(
                    f"{store}: unknown storage_options {with_hints(unknown, valid, quote=True)}; the {store} store "
                    f"takes {', '.join(valid) or 'none'}: correct the names or leave them out",
                    backend=store,
                )
        explicit = {k: v for k, v in given.items() if k in cls._fields and v is not None}
        # Options naming an account (say) make the environment, which may describe another, unread.
        ignoring = sorted(cls._env_unless & explicit.keys())
        values: dict[str, Any] = {}
        for field in cls._fields.values():
            variable = None if ignoring else next((n for n in field.env if environ.get(n)), None)
            if field.name in explicit:
                values[field.name] = self._accept(field, explicit[field.name], None)
            elif variable is not None:
                values[field.name] = self._accept(field, self._parse(field, environ[variable], variable), variable)
            elif field.default is _MISSING:
                self._required(field, ignoring)
            else:
                values[field.name] = field.default
        for name, value in values.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_passthrough", passthrough)  # a dict: a mappingproxy cannot be pickled

    def _accept(self, field: _Field, value: Any, variable: str | None) -> Any:
        """``value`` of ``field``, given in ``storage_options`` (``variable`` None) or read from ``variable``."""
        if not _fits(field, value):
            self._refuse(field, variable, f"must be {field.kind}", value)
        if field.classes is not None and float in field.classes and type(value) is int:
            value = float(value)  # an int where a float is declared: the store gets what it declared
        if field.check is None:
            return value
        refusal: ValueError | TypeError | None = None
        try:
            checked = field.check(value)
        except (ValueError, TypeError) as exc:
            # Refused below, outside this block: raised here, the refusal would carry the check's exception
            # (which may quote a secret) as its __context__ even when raised "from None".
            refusal = exc
        if refusal is not None:
            self._refuse(field, variable, str(refusal), value, refusal)
        return checked

    def _parse(self, field: _Field, text: str, variable: str) -> Any:
        """The value an environment variable's text stands for, by the option's type."""
        for v in field.literals:
            if str(v) == text:
                return v
        classes = field.classes
        if classes is None or str in classes:
            return text
        if bool in classes and text.strip().lower() in _TRUE | _FALSE:
            return text.strip().lower() in _TRUE
        for kind in (int, float):
            if kind in classes:
                try:
                    return kind(text)
                except ValueError:
                    pass
        if field.check is not None and not ({bool, int, float} & set(classes) or field.literals):
            return _Text(text)  # for check= to convert (the declaration requires one for such a type)
        self._refuse(field, variable, f"must be {field.kind}", text)

    def _refuse(
        self, field: _Field, variable: str | None, reason: str, value: Any, cause: BaseException | None = None
    ) -> NoReturn:
        """Raise the error for ``value`` of ``field`` (given, or read from ``variable``), refused for ``reason``.

        ``reason`` is trackpoint's ("must be an int") or the text of the exception ``check`` raised, which
        may say anything and quote the value: it is put after "is refused:", so the message reads the same
        whatever it says. A secret's value is taken out of it and the exception is not chained.
        """
        store = type(self)._store
        subject = f"storage_options[{field.name!r}]"
        if variable is not None:
            subject += f" (from the environment variable {variable})"
        if field.secret and cause is not None:  # the text of check's exception: it may quote the value
            reason = _without(value, reason)  # before spaces are collapsed, which could change a spelling of it
        reason = " ".join(reason.split()).rstrip(".") or "the check gave no reason"
        kind = type(value).__name__
        if field.secret:
            shown = f"a value of type {kind}, not shown: it is secret"
        else:
            shown = f"{kind} {_short(value)}"
        advice = (
            "give a valid value or leave it out" if variable is None else f"set {variable} to a valid value or unset it"
        )
        error = BackendOptionError(f"{store}: {subject} is refused: {reason} (got {shown}); {advice}", backend=store)
        if field.secret:
            raise error from None
        raise error from cause

    def _required(self, field: _Field, ignoring: list[str]) -> NoReturn:
        store = type(self)._store
        how = f"give storage_options[{field.name!r}]"
        if field.env and not ignoring:
            how += f" or set the environment variable {' or '.join(field.env)}"
        elif field.env:
            named = ", ".join(map(repr, ignoring))
            how += f" (the environment, {' or '.join(field.env)}, is not read when storage_options give {named})"
        # The option error the store's other options raise: leaving one out is a usage error as misspelling it is
        # (the command line exits with status 2), and the fix is the same, in the options or the environment.
        raise BackendOptionError(f"{store}: storage_options[{field.name!r}] is required: {how}", backend=store)

    # ------------------------------------------------------------ the values
    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"{type(self).__qualname__} is frozen: cannot assign to {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"{type(self).__qualname__} is frozen: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self) or not isinstance(other, StorageOptions):
            return NotImplemented
        mine = {name: getattr(self, name) for name in type(self)._fields}
        theirs = {name: getattr(other, name) for name in type(other)._fields}
        return mine == theirs and dict(self._passthrough) == dict(other._passthrough)

    # Values may be dicts or credential objects: compared by value, never hashed.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        cls = type(self)
        shown = [
            f"{name}={REDACTED if field.secret else repr(getattr(self, name))}"
            for name, field in cls._fields.items()
            if getattr(self, name) is not None
        ]
        # Passed-on options are not declared, so not known to be harmless: their names only.
        shown += [f"{name}=..." for name in self._passthrough]
        return f"{cls.__qualname__}({', '.join(shown)})"


class _Text(str):
    """An environment variable's text for an option whose ``check`` converts it: exempt from the type check."""


def _fits(field: _Field, value: Any) -> bool:
    """Whether ``value`` is of a type (or one of the literal values) ``field`` declares."""
    if field.classes is None and not field.literals:
        return True
    if isinstance(value, _Text) or any(type(value) is type(v) and value == v for v in field.literals):
        return True
    classes = field.classes or ()
    if isinstance(value, bool) and bool not in classes and {int, float} & set(classes):
        return False  # True is an int to isinstance; an option declared as a number wants a number
    if float in classes and type(value) is int:
        return True  # converted by _accept: 30 where 30.0 is declared
    return isinstance(value, classes)


def _without(secret: Any, reason: str) -> str:
    """``reason`` with every spelling of ``secret`` in it replaced by ``<redacted>``.

    A check's message may quote its input in any form: the value as written, its ``repr`` (escaped, or
    ``b'...'`` for bytes), bytes decoded, the strings inside a mapping of credentials. When a spelling
    remains that :func:`~trackpoint.errors.redact` leaves alone (it replaces values of four characters or
    more, so that a short value does not blank out ordinary words), the reason is left out instead.
    """
    spellings: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, Mapping):
            for inner in value.values():
                collect(inner)
        elif isinstance(value, (bytes, bytearray)):
            spellings.add(bytes(value).decode("utf-8", "replace"))
        spellings.update((str(value), repr(value)))
        if isinstance(value, str):
            spellings.add(repr(value)[1:-1])  # as quoted inside a longer repr

    collect(secret)
    spellings.discard("")
    # Named "secret_<n>": redact replaces the values of options whose names say they are credentials.
    redacted = redact(reason, {f"secret_{n}": spelling for n, spelling in enumerate(spellings)})
    if any(spelling in redacted for spelling in spellings):
        return "the check's reason is not shown, as it could hold the secret value"
    return redacted


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
