"""The plugin manager: loads backend plugins and picks the backend for a URL.

Load order (numbered, so that overrides and duplicate-name errors are
predictable):

1. entry points of the ``trackpoint`` distribution itself, in the fixed order
   ``bundle, memory, s3, gcs, zarr`` (any other built-in after them, by name);
2. third-party entry points of the ``trackpoint.backends`` group, sorted by
   ``(distribution name, entry-point name)``; skipped entirely when
   ``TRACKPOINT_DISABLE_PLUGIN_AUTOLOAD=1``;
3. plugins passed to :func:`register` at run time, in call order.

Every plugin then registers its backends through
``trackpoint_register_backends`` in that same order, so a later plugin can
replace an earlier backend by name (``BackendSpec(override=True)``). A later
backend that takes an earlier one's name without ``override``, or a URL scheme
an earlier one serves, is left out: the earlier one keeps working, the clash is
logged and listed by :func:`list_backends` with what resolves it, and asking
for the left-out backend raises :class:`PluginError` with the same reason (as
for a plugin that fails to import; :func:`register` raises at once instead).
Names in ``TRACKPOINT_BLOCK_BACKENDS`` or passed to :func:`block` are neither
loaded as plugins nor accepted as backend names.

Selection precedence for a URL (first match wins):

1. ``CheckpointOptions(backend=...)``;
2. the ``TRACKPOINT_BACKEND`` environment variable;
3. the ``trackpoint_select_backend`` hook (first non-``None`` answer);
4. the scheme table built from ``BackendSpec.schemes``;
5. the default, ``bundle``, for plain paths and ``file://`` URLs.

Before the backend's factory runs, every ``trackpoint_configure_backend``
implementation may add storage options (the user's own options win).

Readers ask more than one backend when no backend was chosen explicitly
(steps 1 and 2): :func:`detect_backends` lists, in order, the backend the
precedence selects, the one the scheme table (or the default) names, and the
backends plugins name through ``trackpoint_detect_backends``, so that a
checkpoint written with an option that picked another backend is found from
its path alone.

Entry-point metadata is read once per manager; plugin modules are imported
when the manager is first used (they are light: storage libraries are
imported by ``BackendSpec.factory`` when a backend is created).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import inspect
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import pluggy

from trackpoint import _paths, observe
from trackpoint.errors import BackendUnavailableError, CheckpointError, PluginError, UnknownBackendError, redact
from trackpoint.observe import EVENT_HOOKS
from trackpoint.plugins import hookspecs
from trackpoint.plugins._discovery import FoundEntryPoint, entry_points
from trackpoint.plugins._spec import BackendInfo, BackendSpec, url_form
from trackpoint.storage import CheckpointOptions, StorageBackend

__all__ = [
    "BUILTIN_ORDER",
    "DEFAULT_BACKEND",
    "ENTRY_POINT_GROUP",
    "ENV_BACKEND",
    "ENV_BLOCK_BACKENDS",
    "ENV_DISABLE_AUTOLOAD",
    "PluginHost",
    "block",
    "detect_backends",
    "get_plugin_manager",
    "list_backends",
    "open_backend",
    "register",
    "reset",
    "select_backend",
    "unregister",
]

ENTRY_POINT_GROUP: Final = "trackpoint.backends"
BUILTIN_DISTRIBUTION: Final = "trackpoint"
#: Load order of the built-in entry points (step 1 of the load order).
BUILTIN_ORDER: Final = ("bundle", "memory", "s3", "gcs", "zarr")
DEFAULT_BACKEND: Final = "bundle"
ENV_BACKEND: Final = "TRACKPOINT_BACKEND"
ENV_DISABLE_AUTOLOAD: Final = "TRACKPOINT_DISABLE_PLUGIN_AUTOLOAD"
ENV_BLOCK_BACKENDS: Final = "TRACKPOINT_BLOCK_BACKENDS"

_LOCAL_SCHEMES: Final = ("", "file")
_log = logging.getLogger("trackpoint.plugins")


# The private records below are named tuples, not dataclasses: this module is imported on the
# process's first use of the plugin system, and defining a frozen dataclass costs about 1 ms.


class _Provider(NamedTuple):
    """Where a plugin came from, for listings and clash messages."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution is None:
            return f"plugin {self.plugin!r} (registered at run time)"
        return f"plugin {self.plugin!r} from {self.distribution} {self.version}"


class _Registered(NamedTuple):
    spec: BackendSpec
    provider: _Provider


class _Table(NamedTuple):
    """The backends registered by the loaded plugins; rebuilt after every change."""

    backends: dict[str, _Registered]
    schemes: dict[str, str]
    #: Backends left out because they clash with one registered earlier, with the reason.
    refused: list[tuple[_Registered, str]]
    #: The schemes whose URLs name a bucket first (served by a spec with ``buckets=True``).
    buckets: frozenset[str]


class _Loaded:
    """Plugins loaded into one pluggy manager, in load order."""

    __slots__ = ("broken", "order", "pm", "providers")

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.order: list[str] = []
        self.providers: dict[str, _Provider] = {}
        #: Plugins that failed to load or to register, with the reason.
        self.broken: dict[str, tuple[_Provider, str]] = {}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_names(name: str) -> set[str]:
    return {n.strip() for n in os.environ.get(name, "").split(",") if n.strip()}


def _missing_module(spec: BackendSpec) -> str | None:
    """The first module of ``spec.requires`` that is not installed (checked without importing it)."""
    for module in spec.requires:
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            # A missing parent package ("google" for "google.cloud.storage").
            found = None
        if found is None:
            return module
    return None


def _scheme_label(scheme: str) -> str:
    return f"URL scheme {scheme}://" if scheme else "plain local paths"


class _Selection(NamedTuple):
    """The backend name the precedence gives for a URL, and why."""

    name: str
    #: Where the name came from, for messages ("the URL scheme of 's3://b/x'").
    source: str
    #: Chosen by the caller (``CheckpointOptions(backend=...)`` or ``TRACKPOINT_BACKEND``):
    #: readers then ask no other backend.
    explicit: bool


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, not looking for hooks among a plugin's dunder attributes."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> pluggy.HookimplOpts | None:
        # register() asks about every name dir(plugin) lists, and pluggy 1.7 looks each one up
        # statically (inspect.getattr_static), nearly all of them the dunder names every object
        # inherits: registering the seven plugins of a development install took 2.1 ms, and
        # 0.4 ms without those. No hook is a dunder name.
        if name.startswith("__"):
            return None
        return super().parse_hookimpl_opts(plugin, name)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class PluginHost:
    """Loads plugins into a pluggy manager and keeps the table of backends.

    Most code uses the module-level functions, which share one process-wide
    host. Tests create a fresh host with :func:`reset`. All methods are
    thread-safe; loading happens once, on first use.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._blocked: set[str] = set()
        #: Scheme -> name of a backend that would serve it but is blocked (for messages).
        self._blocked_schemes: dict[str, str] = {}
        self._runtime: list[tuple[str, object]] = []
        self._entry_points: list[tuple[FoundEntryPoint, _Provider]] | None = None
        self._loaded: _Loaded | None = None
        self._table: _Table | None = None
        #: Clashes already logged: the table is rebuilt after every change, the warning is given once.
        self._warned: set[str] = set()

    # ------------------------------------------------------------ loading
    def _read_entry_points(self) -> list[tuple[FoundEntryPoint, _Provider]]:
        """Entry points in load order (steps 1 and 2) with their providers; metadata is read once per host."""
        if self._entry_points is None:
            rank = {name: i for i, name in enumerate(BUILTIN_ORDER)}
            with_providers = [
                (ep, _Provider(ep.name, ep.distribution, ep.version)) for ep in entry_points(ENTRY_POINT_GROUP)
            ]

            def key(item: tuple[FoundEntryPoint, _Provider]) -> tuple[int, int, str, str]:
                ep, provider = item
                dist = provider.distribution or ""
                if dist == BUILTIN_DISTRIBUTION:
                    return (0, rank.get(ep.name, len(rank)), "", ep.name)
                return (1, 0, dist.lower(), ep.name)

            self._entry_points = sorted(with_providers, key=key)
        return self._entry_points

    def _blocked_names(self) -> set[str]:
        return self._blocked | _env_names(ENV_BLOCK_BACKENDS)

    def _load(self) -> _Loaded:
        if self._loaded is not None:
            return self._loaded
        pm = _PluginManager(hookspecs.PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        loaded = _Loaded(pm)
        blocked = self._blocked_names()
        for name in blocked:
            pm.set_blocked(name)
        autoload = not _env_flag(ENV_DISABLE_AUTOLOAD)
        for ep, provider in self._read_entry_points():
            if ep.name in blocked or (not autoload and provider.distribution != BUILTIN_DISTRIBUTION):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure makes the plugin unusable, not the host
                self._mark_broken(loaded, provider, f"failed to import {ep.value!r}: {_describe(exc)}")
                continue
            self._add_plugin(loaded, plugin, provider)
        for name, plugin in self._runtime:
            if name not in blocked:
                self._add_plugin(loaded, plugin, _Provider(name))
        self._loaded = loaded
        _publish_observers(loaded.pm)
        return loaded

    def _mark_broken(self, loaded: _Loaded, provider: _Provider, reason: str) -> None:
        # Reported three ways, so the failure is never silent: a warning in the
        # log now, a row in list_backends(), and the reason in the error raised
        # when the backend is asked for.
        loaded.broken[provider.plugin] = (provider, reason)
        if provider.distribution is not None:
            # A plugin registered at run time is refused by register() itself, which raises instead.
            _log.warning("trackpoint %s is not usable: %s", provider, reason)

    def _add_plugin(self, loaded: _Loaded, plugin: object, provider: _Provider) -> None:
        name = provider.plugin
        if name in loaded.providers:
            if provider.distribution is None:
                how = (
                    f"register it under another name, or take the first out with "
                    f"trackpoint.plugins.unregister({name!r}) first"
                )
            else:
                how = f"uninstall one, or block one with {ENV_BLOCK_BACKENDS}={name}"
            raise PluginError(f"two plugins are named {name!r}: {loaded.providers[name]} and {provider}; {how}")
        try:
            loaded.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            # pluggy has already recorded the name and any hooks validated
            # before the bad one; take the half-registered plugin out again.
            if loaded.pm.get_plugin(name) is not None:
                loaded.pm.unregister(name=name)
            self._mark_broken(loaded, provider, f"invalid hook implementation: {exc}")
            return
        # pluggy accepts implementations of hooks nobody specified (they wait
        # for a spec); here that can only be a misspelt hook that would
        # silently never run.
        unknown = sorted(c.name for c in loaded.pm.get_hookcallers(plugin) or () if c.spec is None)
        # And a hook function without @hookimpl is ignored by pluggy just as silently.
        unmarked = sorted(
            n
            for n in dir(plugin)
            if n.startswith("trackpoint_")
            and inspect.isroutine(getattr(plugin, n, None))
            and loaded.pm.parse_hookimpl_opts(plugin, n) is None
        )
        # Event hooks are called one implementation at a time (trackpoint.observe), so
        # that a failing observer cannot fail a save; a wrapper would never run.
        wrappers = sorted(
            c.name
            for c in loaded.pm.get_hookcallers(plugin) or ()
            if c.name in EVENT_HOOKS
            for impl in c.get_hookimpls()
            if impl.plugin is plugin and (impl.hookwrapper or impl.wrapper)
        )
        if unknown or unmarked or wrappers:
            loaded.pm.unregister(name=name)
            known = sorted(n for n in dir(hookspecs) if n.startswith("trackpoint_"))
            if unknown:
                problem = f"implements unknown hook(s) {', '.join(unknown)}; known hooks: {', '.join(known)}"
            elif unmarked:
                problem = f"{', '.join(unmarked)} lacks the @trackpoint.plugins.hookimpl decorator"
            else:
                problem = (
                    f"implements the event hook(s) {', '.join(wrappers)} as a wrapper; event hooks are called "
                    "one implementation at a time: drop wrapper=True/hookwrapper=True"
                )
            self._mark_broken(loaded, provider, problem)
            return
        loaded.order.append(name)
        loaded.providers[name] = provider

    def _build_table(self) -> _Table:
        if self._table is not None:
            return self._table
        loaded = self._load()
        blocked = self._blocked_names()
        backends: dict[str, _Registered] = {}
        schemes: dict[str, str] = {}
        refused: list[tuple[_Registered, str]] = []
        plugins = {name: loaded.pm.get_plugin(name) for name in loaded.order}
        for name in list(loaded.order):
            provider = loaded.providers[name]
            # One plugin at a time, in load order: pluggy would call all
            # implementations last-registered first, and the host must know
            # which plugin registered which spec to report clashes.
            others = [p for n, p in plugins.items() if n != name]
            caller = loaded.pm.subset_hook_caller("trackpoint_register_backends", remove_plugins=others)
            specs: list[BackendSpec] = []
            try:
                caller(register=functools.partial(self._collect, specs, provider))
            except PluginError:
                raise
            except Exception as exc:  # noqa: BLE001 - a faulty plugin is reported, the others stay usable
                # Taken out entirely (its other hooks too), so it is reported once
                # and cannot half-work.
                self._drop(loaded, name)
                self._mark_broken(loaded, provider, f"trackpoint_register_backends raised {_describe(exc)}")
                continue
            for spec in specs:
                if spec.name in blocked:
                    for scheme in spec.schemes:
                        self._blocked_schemes.setdefault(scheme, spec.name)
                    continue
                entry = _Registered(spec, provider)
                clash = self._add_backend(backends, schemes, entry)
                if clash is not None:
                    # Not fatal, like a plugin that fails to import: the backends registered so far (local
                    # paths among them) keep working; the clash is reported where the broken plugins are.
                    refused.append((entry, clash))
                    if provider.distribution is not None and clash not in self._warned:
                        # A plugin registered at run time is refused by register() itself, which raises.
                        self._warned.add(clash)
                        _log.warning("trackpoint backend %r is not usable: %s", spec.name, clash)
        buckets = frozenset(s for e in backends.values() if e.spec.buckets for s in e.spec.schemes)
        self._table = _Table(backends, schemes, refused, buckets)
        return self._table

    @staticmethod
    def _collect(specs: list[BackendSpec], provider: _Provider, spec: BackendSpec) -> None:
        if not isinstance(spec, BackendSpec):
            raise PluginError(
                f"{provider} passed {type(spec).__name__} to register(); pass a trackpoint.plugins.BackendSpec"
            )
        specs.append(spec)

    @staticmethod
    def _add_backend(backends: dict[str, _Registered], schemes: dict[str, str], new: _Registered) -> str | None:
        """Register ``new`` in the table; if it clashes with an earlier backend, change nothing and say why."""
        name = new.spec.name
        old = backends.get(name)
        if old is not None and not new.spec.override:
            return (
                f"backend name {name!r} is registered by {old.provider} and by {new.provider}; the second is left "
                f"out. Set BackendSpec(override=True) in the second to replace the first on purpose, or keep one: "
                f"block the other plugin with {ENV_BLOCK_BACKENDS}=<its plugin name> ({old.provider.plugin!r} or "
                f"{new.provider.plugin!r}; the backend name would block both) or uninstall it"
            )
        for scheme in new.spec.schemes:
            owner = schemes.get(scheme)
            # A scheme of the backend an override replaces (owner == name) is free for it.
            if owner is not None and owner != name:
                return _scheme_clash(scheme, backends[owner], new)
        if old is not None:
            for scheme in old.spec.schemes:
                schemes.pop(scheme, None)
        backends[name] = new
        for scheme in new.spec.schemes:
            schemes[scheme] = name
        return None

    def _invalidate(self) -> None:
        self._table = None
        if self._loaded is not None:
            # Every change of the plugins goes through here: tell the event
            # dispatcher whether anybody observes now.
            _publish_observers(self._loaded.pm)

    @staticmethod
    def _drop(loaded: _Loaded, name: str) -> None:
        if loaded.pm.get_plugin(name) is not None:
            loaded.pm.unregister(name=name)
        loaded.order.remove(name)
        del loaded.providers[name]

    # --------------------------------------------------------- public API
    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The pluggy manager with every plugin loaded."""
        with self._lock:
            return self._load().pm

    def register(self, plugin: object, name: str) -> None:
        """Add a plugin at run time (step 3 of the load order); see :func:`register`."""
        with self._lock:
            loaded = self._load()
            if name in self._blocked_names():
                raise PluginError(f"cannot register plugin {name!r}: that name is blocked")
            self._add_plugin(loaded, plugin, _Provider(name))
            if name in loaded.broken:
                provider, reason = loaded.broken.pop(name)
                raise PluginError(f"cannot register {provider}: {reason}")
            self._runtime.append((name, plugin))
            self._invalidate()
            try:
                # Build now, so a clash or a failing hook is reported to the
                # caller of register() and the plugin is not kept.
                table = self._build_table()
            except PluginError:
                self.unregister(name)
                raise
            clash = next((reason for entry, reason in table.refused if entry.provider.plugin == name), None)
            if clash is not None:
                provider = loaded.providers[name]
                self.unregister(name)
                raise PluginError(f"cannot register {provider}: {clash}")
            if name in loaded.broken:
                provider, reason = loaded.broken.pop(name)
                self._runtime.pop()
                self._invalidate()
                raise PluginError(f"cannot register {provider}: {reason}")

    def unregister(self, name: str) -> None:
        """Remove a loaded plugin and the backends it registered."""
        with self._lock:
            loaded = self._load()
            if name not in loaded.providers:
                raise PluginError(
                    f"no plugin named {name!r} is loaded; loaded plugins: {', '.join(loaded.order) or '(none)'}"
                )
            self._drop(loaded, name)
            self._runtime = [(n, p) for n, p in self._runtime if n != name]
            self._invalidate()

    def block(self, name: str) -> None:
        """Block a plugin or backend name; see :func:`block`."""
        with self._lock:
            self._blocked.add(name)
            if self._table is not None:
                # Remember what the blocked backends served, so a URL of that
                # scheme is reported as blocked rather than as unknown.
                for entry in self._table.backends.values():
                    if name in (entry.spec.name, entry.provider.plugin):
                        for scheme in entry.spec.schemes:
                            self._blocked_schemes.setdefault(scheme, entry.spec.name)
            if self._loaded is not None:
                loaded = self._loaded
                if name in loaded.providers:
                    self._drop(loaded, name)
                loaded.broken.pop(name, None)
                loaded.pm.set_blocked(name)
            self._invalidate()

    def select(self, url: str, options: CheckpointOptions) -> str:
        """The backend name for ``url`` by the documented precedence; see :func:`select_backend`."""
        return self._select(url, options).name

    def _select(self, url: str, options: CheckpointOptions) -> _Selection:
        if options.backend:
            return _Selection(options.backend, "CheckpointOptions(backend=...)", explicit=True)
        env = os.environ.get(ENV_BACKEND, "").strip()
        if env:
            return _Selection(env, f"the {ENV_BACKEND} environment variable", explicit=True)
        with self._lock:
            table = self._build_table()
            pm = self._load().pm
        # Hooks run outside the lock: they are plugin code (a configure hook
        # may fetch credentials) and pluggy copies its implementation list per
        # call, so a concurrent register() cannot disturb a running call.
        chosen = pm.hook.trackpoint_select_backend(url=url, options=options)
        if chosen is not None:
            return _Selection(str(chosen), f"the trackpoint_select_backend hook (for {url!r})", explicit=False)
        scheme = _paths.scheme(url)
        by_scheme = table.schemes.get(scheme)
        if by_scheme is not None:
            return _Selection(by_scheme, f"the URL scheme of {url!r}", explicit=False)
        if scheme in _LOCAL_SCHEMES:
            return _Selection(DEFAULT_BACKEND, f"the default for local paths ({url!r})", explicit=False)
        blocked = self._blocked_scheme_owner(scheme)
        if blocked is not None:
            raise UnknownBackendError(
                f"the URL scheme {scheme!r} of {url!r} is served by backend {blocked!r}, which is blocked by "
                f"{self._blocked_by(blocked)}; {self._unblock_hint(blocked)}",
                backend=blocked,
                url=url,
            )
        known = sorted(url_form(s) for s in table.schemes)
        blocked_note = ""
        if self._blocked_names():
            blocked_note = "; blocked backends and plugins (one may serve it): " + ", ".join(
                f"{n} (by {self._blocked_by(n)})" for n in sorted(self._blocked_names())
            )
        raise UnknownBackendError(
            f"no backend serves the URL scheme {scheme!r} of {url!r}; known schemes: {', '.join(known) or '(none)'}"
            f"{self._broken_note()}{blocked_note}. Install or register a plugin for it, or choose a backend with "
            "CheckpointOptions(backend=...)",
            url=url,
        )

    def has_buckets(self, scheme: str) -> bool:
        """Whether URLs of ``scheme`` name a bucket first; see :func:`_has_buckets`."""
        table = self._table
        if table is None:
            with self._lock:
                table = self._build_table()
        return scheme in table.buckets or scheme.rpartition("+")[2] in table.buckets

    def _blocked_scheme_owner(self, scheme: str) -> str | None:
        """The blocked backend (or plugin) that would serve ``scheme``, if trackpoint can tell.

        Known exactly when the blocked backend's plugin was loaded (a backend
        name blocked while its plugin loads, or :func:`block` after loading).
        A plugin blocked before loading is never imported, so then the
        scheme's own name decides: ``zarr+s3`` and ``zarr`` belong to a
        blocked ``zarr``.
        """
        with self._lock:
            self._build_table()
            owner = self._blocked_schemes.get(scheme)
            blocked = self._blocked_names()
        if owner is not None and owner in blocked:
            return owner
        base = scheme.split("+", 1)[0]
        for candidate in (scheme, base):
            if candidate and candidate in blocked:
                return candidate
        return None

    def _blocked_by(self, name: str) -> str:
        """Where ``name`` is blocked: the environment variable, :func:`block`, or both."""
        where = []
        if name in _env_names(ENV_BLOCK_BACKENDS):
            value = os.environ.get(ENV_BLOCK_BACKENDS, "")
            where.append(f"{ENV_BLOCK_BACKENDS} (the environment variable, set to {value!r})")
        if name in self._blocked:
            where.append(f"trackpoint.plugins.block({name!r})")
        return " and ".join(where) or "a block"

    def _unblock_hint(self, name: str) -> str:
        hints = []
        if name in _env_names(ENV_BLOCK_BACKENDS):
            hints.append(
                f"remove {name!r} from {ENV_BLOCK_BACKENDS} (a running process then needs trackpoint.plugins.reset())"
            )
        if name in self._blocked:
            hints.append("call trackpoint.plugins.reset() to lift trackpoint.plugins.block()")
        return "; ".join([*hints, "or choose another backend with CheckpointOptions(backend=...)"])

    def _broken_note(self) -> str:
        loaded = self._loaded
        if loaded is None or not loaded.broken:
            return ""
        return "; plugins that failed to load: " + "; ".join(
            f"{name} ({reason})" for name, (_, reason) in sorted(loaded.broken.items())
        )

    def _unknown(self, name: str, source: str, table: _Table) -> CheckpointError:
        loaded = self._load()
        clash = next((reason for entry, reason in table.refused if entry.spec.name == name), None)
        if clash is not None:
            return PluginError(f"backend {name!r} (chosen by {source}) is unusable: {clash}", backend=name)
        if name in loaded.broken:
            provider, reason = loaded.broken[name]
            return PluginError(f"backend {name!r} (chosen by {source}) is unusable: {provider} {reason}", backend=name)
        if name in self._blocked_names():
            return UnknownBackendError(
                f"backend {name!r} (chosen by {source}) is blocked by {self._blocked_by(name)}; "
                f"{self._unblock_hint(name)}",
                backend=name,
            )
        return UnknownBackendError(
            f"unknown backend {name!r} (chosen by {source}); registered backends: "
            f"{', '.join(sorted(table.backends)) or '(none)'}{self._broken_note()}",
            backend=name,
        )

    def open(self, url: str, options: CheckpointOptions | None = None) -> StorageBackend:
        """A new backend instance for ``url``; see :func:`open_backend`."""
        opts = options or CheckpointOptions()
        return self._open_selected(self._select(url, opts), url, opts)

    def open_detected(self, url: str, options: CheckpointOptions | None = None) -> tuple[StorageBackend, list[str]]:
        """:meth:`open` and :meth:`detect` for ``url`` with one run of the selection precedence."""
        opts = options or CheckpointOptions()
        selection = self._select(url, opts)
        names = self._detect_from(selection, url, opts)
        return self._open_selected(selection, url, opts), names

    def _open_selected(self, selection: _Selection, url: str, opts: CheckpointOptions) -> StorageBackend:
        name, source = selection.name, selection.source
        with self._lock:
            table = self._build_table()
            pm = self._load().pm
            entry = table.backends.get(name)
            if entry is None:
                raise self._unknown(name, source, table)
        spec = entry.spec
        missing = _missing_module(spec)
        if missing is not None:
            raise BackendUnavailableError(f"backend {name!r} needs {missing}: {spec.install_command()}", backend=name)
        try:
            opts = _configure(pm, name, url, opts)
            backend = self._create(entry, name, url, opts)
        except UnknownBackendError as exc:
            # A backend chosen by name that cannot serve the URL knows its own URL forms only (the built-in
            # zarr names zarr+s3://, not a plugin's zarr+<scheme>://): add those registered for the URL's store.
            store = _paths.scheme(url).rpartition("+")[2]
            forms = _forms_for(table, name, store)
            if forms and exc.args and isinstance(exc.args[0], str):
                exc.args = (
                    f"{exc.args[0]}. Registered for {url_form(store)} URLs: {forms}: write the URL with one of "
                    "these schemes, or choose its backend with CheckpointOptions(backend=...)",
                    *exc.args[1:],
                )
            exc.backend = exc.backend or name
            exc.url = exc.url or url
            raise
        except CheckpointError as exc:
            # Context the raiser may not have had: which backend, for which URL.
            exc.backend = exc.backend or name
            exc.url = exc.url or url
            raise
        backend.name = name
        return backend

    @staticmethod
    def _create(entry: _Registered, name: str, url: str, opts: CheckpointOptions) -> StorageBackend:
        spec = entry.spec
        # No instance cache: factories are cheap (fsspec caches its clients
        # itself), a backend may bind its URL (one database file, one bucket),
        # and a shared instance would make close() by one caller break others.
        try:
            backend = spec.factory(url, opts)
        except CheckpointError:
            raise
        except ImportError as exc:
            raise BackendUnavailableError(
                f"backend {name!r} could not import {exc.name or 'a dependency'}: {spec.install_command()}"
            ) from exc
        except Exception as exc:
            described = _describe(exc)
            shown = redact(described, opts.storage_options)
            error = PluginError(f"backend {name!r} ({entry.provider}) failed to open {url!r}: {shown}")
            if shown != described:
                # The original error quotes a credential: neither message nor traceback may show it.
                raise error from None
            raise error from exc
        if not isinstance(backend, StorageBackend):
            raise PluginError(
                f"backend {name!r} ({entry.provider}): its factory returned {type(backend).__name__}, "
                "not a trackpoint.storage.StorageBackend"
            )
        return backend

    def detect(self, url: str, options: CheckpointOptions) -> list[str]:
        """The backends readers ask for checkpoints at ``url``, in order; see :func:`detect_backends`."""
        return self._detect_from(self._select(url, options), url, options)

    def _detect_from(self, selection: _Selection, url: str, options: CheckpointOptions) -> list[str]:
        if selection.explicit:
            return [selection.name]
        with self._lock:
            table = self._build_table()
            pm = self._load().pm
            blocked = self._blocked_names()
        order = [selection.name]
        scheme = _paths.scheme(url)
        default = table.schemes.get(scheme) or (DEFAULT_BACKEND if scheme in _LOCAL_SCHEMES else None)
        named = _detect(pm, url, options)
        # Registration order (= load order) makes the order of the others, and
        # with it the precedence between formats, independent of hook order.
        rank = {n: i for i, n in enumerate(table.backends)}
        refused = {entry.spec.name for entry, _ in table.refused}
        # Blocked and left-out backends are not asked, as if their plugins had not named them.
        unknown = sorted(n for n in named if n not in rank and n not in blocked and n not in refused)
        if unknown:
            implementers = ", ".join(i.plugin_name for i in pm.hook.trackpoint_detect_backends.get_hookimpls())
            raise PluginError(
                f"trackpoint_detect_backends named unregistered backend(s) {', '.join(map(repr, unknown))} for "
                f"{url!r} (implemented by: {implementers}); registered backends: {', '.join(sorted(rank))}"
            )
        others = [default] if default is not None else []
        others += sorted((n for n in set(named) if n in rank), key=rank.__getitem__)
        for name in others:
            entry = table.backends.get(name)
            # Blocked or not installed: its checkpoints cannot be read anyway.
            if name not in order and entry is not None and _missing_module(entry.spec) is None:
                order.append(name)
        return order

    def backends(self) -> list[BackendInfo]:
        """Every registered backend, then every broken plugin; see :func:`list_backends`."""
        with self._lock:
            table = self._build_table()
            broken = dict(self._load().broken)
        rows: list[BackendInfo] = []
        for entry in table.backends.values():
            missing = _missing_module(entry.spec)
            reason = "" if missing is None else f"needs {missing}: {entry.spec.install_command()}"
            rows.append(_backend_row(entry, missing is None, reason))
        rows.extend(_backend_row(entry, False, reason) for entry, reason in table.refused)
        for name, (provider, reason) in broken.items():
            rows.append(
                BackendInfo(
                    name=name,
                    schemes=(),
                    description="",
                    plugin=provider.plugin,
                    distribution=provider.distribution,
                    version=provider.version,
                    available=False,
                    reason=reason,
                    capabilities=None,
                )
            )
        return rows


def _forms_for(table: _Table, chosen: str, store: str) -> str:
    """The URL forms backends other than ``chosen`` serve for ``store``'s scheme, ``chosen``'s format first.

    ``"zarr+tinyobj:// (backend 'zarr-tinyobj'), tinyobj:// (backend 'tinyobj')"`` for the store
    ``"tinyobj"`` and ``chosen`` ``"zarr"``; ``""`` when no other backend serves that store.
    """
    if not store:
        return ""
    served = [
        (s, owner) for s, owner in table.schemes.items() if owner != chosen and (s == store or s.endswith(f"+{store}"))
    ]
    served.sort(key=lambda item: (not item[0].startswith(f"{chosen}+"), item[0]))
    return ", ".join(f"{url_form(s)} (backend {owner!r})" for s, owner in served)


def _scheme_clash(scheme: str, owner: _Registered, new: _Registered) -> str:
    """Why ``new`` is left out: ``owner``, registered before it, serves ``scheme`` already; and what resolves it."""
    label, kept, dropped = _scheme_label(scheme), owner.spec.name, new.spec.name
    # Third-party distributions only: uninstalling trackpoint itself resolves nothing.
    dists = [
        d for d in (owner.provider.distribution, new.provider.distribution) if d not in (None, BUILTIN_DISTRIBUTION)
    ]
    uninstall = ""
    if len(dists) == 2:
        uninstall = f"; or uninstall one of {dists[0]} and {dists[1]}"
    elif dists:
        uninstall = f"; or uninstall {dists[0]}"
    return (
        f"{label} is claimed by backend {kept!r} ({owner.provider}) and by backend {dropped!r} ({new.provider}); "
        f"a scheme has one backend, so {dropped!r} is left out and {kept!r} keeps serving {label}. To use "
        f"{dropped!r} instead, block {kept!r} with {ENV_BLOCK_BACKENDS}={kept}; to keep {kept!r} and drop this "
        f"warning, block {dropped!r} with {ENV_BLOCK_BACKENDS}={dropped}{uninstall}. A plugin meant to replace "
        f"{kept!r} registers under that name: BackendSpec(name={kept!r}, override=True)"
    )


def _detect(pm: pluggy.PluginManager, url: str, options: CheckpointOptions) -> list[str]:
    """The backend names every ``trackpoint_detect_backends`` implementation gives for ``url``."""
    caller = pm.hook.trackpoint_detect_backends
    if not caller.get_hookimpls():
        return []
    implementers = ", ".join(impl.plugin_name for impl in caller.get_hookimpls())
    try:
        answers = caller(url=url, options=options)
    except CheckpointError:
        raise
    except Exception as exc:
        raise PluginError(
            f"trackpoint_detect_backends failed for {url!r} (implemented by: {implementers}): {_describe(exc)}"
        ) from exc
    names: list[str] = []
    for answer in answers:
        names_only = isinstance(answer, (list, tuple)) and all(isinstance(n, str) for n in answer)
        if not names_only:
            raise PluginError(
                f"trackpoint_detect_backends returned {answer!r} for {url!r} (implemented by: {implementers}); "
                "return a list or tuple of backend names, or None"
            )
        names.extend(answer)
    return names


def _configure(pm: pluggy.PluginManager, name: str, url: str, options: CheckpointOptions) -> CheckpointOptions:
    """``options`` with the storage options plugins supply through ``trackpoint_configure_backend``."""
    caller = pm.hook.trackpoint_configure_backend
    if not caller.get_hookimpls():
        return options
    implementers = ", ".join(impl.plugin_name for impl in caller.get_hookimpls())
    try:
        answers = caller(name=name, url=url, options=options)
    except CheckpointError:
        raise
    except Exception as exc:
        raise PluginError(
            f"trackpoint_configure_backend failed for backend {name!r} and {url!r} "
            f"(implemented by: {implementers}): {type(exc).__name__}"
        ) from exc
    merged: dict[str, Any] = {}
    for answer in answers:  # last-registered plugin first: it wins per key
        if not isinstance(answer, Mapping) or not all(isinstance(k, str) for k in answer):
            raise PluginError(
                f"trackpoint_configure_backend returned {type(answer).__name__} for backend {name!r} "
                f"(implemented by: {implementers}); return a mapping of storage options or None"
            )
        for key, value in answer.items():
            merged.setdefault(key, value)
    if not merged:
        return options
    # The user's explicit storage options always win over plugin defaults.
    merged.update(options.storage_options)
    return dataclasses.replace(options, storage_options=merged)


def _publish_observers(pm: pluggy.PluginManager) -> None:
    """Hand the hook relay to :mod:`trackpoint.observe` if some plugin implements an event hook, else ``None``.

    Saves and restores check that one reference before doing any work for
    events, so a process without observers pays nothing for them.
    """
    observed = any(getattr(pm.hook, name).get_hookimpls() for name in EVENT_HOOKS)
    observe._set_relay(pm.hook if observed else None)


# ------------------------------------------------------------------ process-wide host
_host_lock = threading.Lock()
_host: PluginHost | None = None


def _get_host() -> PluginHost:
    global _host
    with _host_lock:
        if _host is None:
            _host = PluginHost()
        return _host


def _has_buckets(scheme: str) -> bool:
    """Whether the first component of a ``scheme://`` URL is a bucket (or container), by the backend serving it.

    The backend registered for ``scheme`` says so (:attr:`BackendSpec.buckets`, set for every object
    store); a ``<format>+<store>`` scheme (``zarr+s3``) follows the backend of ``<store>``. A scheme no
    backend serves is not known to have buckets (opening it fails anyway). Asked by every save: after the
    first call it is two set lookups.
    """
    return _get_host().has_buckets(scheme)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide pluggy manager, with all plugins loaded (on first call)."""
    return _get_host().plugin_manager


def open_backend(url: str, options: CheckpointOptions | None = None) -> StorageBackend:
    """A new instance of the backend that serves ``url`` under ``options``.

    Parameters
    ----------
    url
        A local path or URL (``/tmp/run/ckpt``, ``s3://bucket/run``,
        ``zarr+file:///tmp/z``).
    options
        ``options.backend`` names the backend explicitly; otherwise the
        documented precedence decides (see :mod:`trackpoint.plugins.manager`).

    Raises
    ------
    UnknownBackendError
        No backend has the requested name or serves the URL's scheme, or the
        name is blocked; the message lists the valid names or schemes.
    BackendUnavailableError
        The backend's ``requires`` are not installed; the message says what to
        install.
    PluginError
        The plugin providing the backend failed to load, two plugins clash,
        or the factory failed.
    """
    return _get_host().open(url, options)


def _open_detected(url: str, options: CheckpointOptions | None = None) -> tuple[StorageBackend, list[str]]:
    """:func:`open_backend` and :func:`detect_backends` at once, selecting once (for ``trackpoint._resolve``)."""
    return _get_host().open_detected(url, options)


def detect_backends(url: str, options: CheckpointOptions | None = None) -> list[str]:
    """The backends readers ask, in this order, whether checkpoints are stored at ``url``.

    With a backend chosen explicitly (``CheckpointOptions(backend=...)`` or
    ``TRACKPOINT_BACKEND``) that backend alone. Otherwise first the backend
    :func:`select_backend` gives, then the one the URL's scheme (or the
    ``bundle`` default for local paths) names if that differs, then every
    backend a plugin names through ``trackpoint_detect_backends``, in
    registration order. Blocked backends and backends whose ``requires`` are
    missing are left out. Nothing is opened and no storage is touched.

    Raises
    ------
    UnknownBackendError
        No backend serves the URL (as for :func:`select_backend`).
    PluginError
        A ``trackpoint_detect_backends`` implementation failed or named an
        unregistered backend.
    """
    return _get_host().detect(url, options or CheckpointOptions())


def select_backend(url: str, options: CheckpointOptions | None = None) -> str:
    """The name of the backend :func:`open_backend` would use for ``url``, without creating it.

    Raises :class:`UnknownBackendError` when no step of the precedence
    matches; a name it returns may still be unregistered (that is reported by
    :func:`open_backend`).
    """
    return _get_host().select(url, options or CheckpointOptions())


def list_backends() -> list[BackendInfo]:
    """Every registered backend in registration order, then plugins that failed to load.

    Rows of unavailable backends carry the reason (the missing module and the
    command that installs it, or the plugin's import error).
    """
    return _get_host().backends()


def register(plugin: object, name: str) -> None:
    """Register a plugin object or module at run time (step 3 of the load order).

    Parameters
    ----------
    plugin
        A module, class or instance with ``@hookimpl`` functions.
    name
        Plugin name, unique among loaded plugins.

    Raises
    ------
    PluginError
        The name is taken or blocked, a hook implementation is invalid, or
        a backend it registers clashes with an existing one (the plugin is then
        not kept).
    """
    _get_host().register(plugin, name)


def unregister(name: str) -> None:
    """Remove the plugin ``name`` (any load step) and its backends.

    Raises :class:`PluginError` when no such plugin is loaded.
    """
    _get_host().unregister(name)


def block(name: str) -> None:
    """Block ``name`` as a plugin name and as a backend name, like ``TRACKPOINT_BLOCK_BACKENDS``.

    A loaded plugin of that name is removed; a backend of that name is
    dropped from the table, whoever registered it.
    """
    _get_host().block(name)


def reset() -> None:
    """Forget loaded plugins, run-time registrations and blocks.

    The next use re-reads entry points and environment variables. Meant for
    tests and for picking up a plugin installed while the process runs.
    """
    global _host
    with _host_lock:
        _host = None
        observe._set_relay(None)


def _backend_row(entry: _Registered, available: bool, reason: str) -> BackendInfo:
    """The :class:`BackendInfo` of a registered backend (``entry``: its spec and provider)."""
    spec, provider = entry.spec, entry.provider
    return BackendInfo(
        name=spec.name,
        schemes=spec.schemes,
        description=spec.description,
        plugin=provider.plugin,
        distribution=provider.distribution,
        version=provider.version,
        available=available,
        reason=reason,
        capabilities=spec.capabilities,
    )
