"""``StorageOptions``: a store's ``storage_options`` declared once, resolved from options, environment and defaults."""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator
from typing import Any, Literal, NewType

import pytest

import trackpoint as tp
from trackpoint import plugins
from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import ObjectStore, TransferOptions
from trackpoint.errors import BackendError, BackendOptionError, PluginError
from trackpoint.plugins import StorageOptions, option
from trackpoint.storage import CheckpointOptions

Port = NewType("Port", int)  # not a class: isinstance cannot check it


def _positive(seconds: float) -> float:
    if not seconds > 0:
        raise ValueError("must be positive")
    return seconds


def _hex_bytes(value: str | bytes) -> bytes:
    # A type environment variables cannot spell: check= converts their text (and checks given bytes).
    if isinstance(value, bytes):
        value = value.decode("ascii")
    return bytes.fromhex(value)


class TinyOptions(StorageOptions, store="tinyobj", env_unless=("endpoint",)):
    """The options of a made-up store, one of each kind."""

    endpoint: str = option(env="TINYOBJ_ENDPOINT")
    token: str | None = option(default=None, env=("TINYOBJ_TOKEN", "TINY_TOKEN"), secret=True)
    timeout: float = option(default=30.0, env="TINYOBJ_TIMEOUT", check=_positive)
    parts: int = option(default=4, env="TINYOBJ_PARTS")
    anon: bool = option(default=False, env="TINYOBJ_ANON")
    region: Literal["eu", "us"] = option(default="eu", env="TINYOBJ_REGION")
    salt: bytes | None = option(default=None, env="TINYOBJ_SALT", check=_hex_bytes, secret=True)
    client_kwargs: dict[str, Any] | None = None


def test_values_come_from_the_options_then_the_environment_then_the_defaults() -> None:
    env = {"TINYOBJ_TOKEN": "", "TINY_TOKEN": "from-env", "TINYOBJ_TIMEOUT": "2.5", "TINYOBJ_PARTS": "8"}
    opts = TinyOptions.from_storage_options({"timeout": 7, "token": None}, environ={**env, "TINYOBJ_ENDPOINT": "e"})
    assert opts.endpoint == "e"  # from the environment
    assert opts.token == "from-env"  # the first variable that is set and not empty; None counts as not given
    assert opts.timeout == 7.0 and isinstance(opts.timeout, float)  # the option wins, an int made a float
    assert (opts.parts, opts.anon, opts.region, opts.salt) == (8, False, "eu", None)  # parsed, defaults
    spelled = {"TINYOBJ_ANON": "Yes", "TINYOBJ_REGION": "us", "TINYOBJ_SALT": "00ff", "TINYOBJ_ENDPOINT": "e"}
    opts = TinyOptions.from_storage_options({}, environ=spelled)
    assert (opts.anon, opts.region, opts.salt) == (True, "us", b"\x00\xff")


def test_the_environment_is_read_as_it_is_now_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYOBJ_ENDPOINT", "http://from-process-env")
    assert TinyOptions.from_storage_options({}).endpoint == "http://from-process-env"


def test_options_naming_the_endpoint_leave_the_environment_unread() -> None:
    env = {"TINYOBJ_ENDPOINT": "http://env", "TINYOBJ_TOKEN": "env-token", "TINYOBJ_PARTS": "9"}
    opts = TinyOptions.from_storage_options({"endpoint": "http://code"}, environ=env)
    # The environment's token belongs to the environment's endpoint: never sent to the one named in code.
    assert (opts.endpoint, opts.token, opts.parts) == ("http://code", None, 4)


def test_an_unknown_name_is_refused_with_the_closest_valid_one() -> None:
    with pytest.raises(BackendOptionError) as refused:
        TinyOptions.from_storage_options({"endpont": "x", "bogus": 1}, environ={})
    assert str(refused.value) == (
        "tinyobj: unknown storage_options 'bogus', 'endpont' (did you mean 'endpoint'?); the tinyobj store takes "
        "anon, client_kwargs, endpoint, parts, region, salt, timeout, token: correct the names or leave them out"
    )
    assert isinstance(refused.value, tp.InvalidArgumentError) and refused.value.backend == "tinyobj"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"anon": "yes"}, "storage_options['anon'] must be a bool, got str 'yes'; give a valid value or leave it out"),
        ({"parts": True}, "storage_options['parts'] must be an int, got bool True"),  # True is no number of parts
        ({"parts": 2.0}, "storage_options['parts'] must be an int, got float 2.0"),
        ({"timeout": "5"}, "storage_options['timeout'] must be a float, got str '5'"),
        ({"timeout": -1}, "storage_options['timeout'] must be positive, got float -1.0"),
        ({"region": "ap"}, "storage_options['region'] must be one of 'eu', 'us', got str 'ap'"),
        ({"client_kwargs": []}, "storage_options['client_kwargs'] must be a dict, got list []"),
    ],
)
def test_a_value_of_the_wrong_type_or_refused_by_its_check_names_the_option(
    given: dict[str, Any], message: str
) -> None:
    with pytest.raises(BackendOptionError) as refused:
        TinyOptions.from_storage_options({"endpoint": "e", **given}, environ={})
    assert str(refused.value).startswith(f"tinyobj: {message}")


@pytest.mark.parametrize(
    ("variable", "text", "why"),
    [
        ("TINYOBJ_PARTS", "eight", "must be an int, got str 'eight'"),
        ("TINYOBJ_ANON", "maybe", "must be a bool, got str 'maybe'"),
        ("TINYOBJ_TIMEOUT", "-3", "must be positive, got float -3.0"),
        ("TINYOBJ_REGION", "EU", "must be one of 'eu', 'us', got str 'EU'"),
    ],
)
def test_an_unusable_environment_variable_is_named_with_its_option(variable: str, text: str, why: str) -> None:
    option_name = variable.removeprefix("TINYOBJ_").lower()
    with pytest.raises(BackendOptionError) as refused:
        TinyOptions.from_storage_options({}, environ={"TINYOBJ_ENDPOINT": "e", variable: text})
    assert str(refused.value) == (
        f"tinyobj: the environment variable {variable} (read for storage_options[{option_name!r}]) {why}; "
        f"set {variable} to a valid value or unset it"
    )


def test_secrets_never_reach_a_message_or_the_repr() -> None:
    for given, env in [
        ({"token": 12345678}, {}),  # a wrong type
        ({"salt": b"zz-SECRET"}, {}),  # refused by check (bytes.fromhex), as given
        ({}, {"TINYOBJ_SALT": "zz-not-hex-SECRET"}),  # and as read from the environment
    ]:
        with pytest.raises(BackendOptionError) as refused:
            TinyOptions.from_storage_options(given, environ={"TINYOBJ_ENDPOINT": "e", **env})
        assert "12345678" not in str(refused.value) and "SECRET" not in str(refused.value)
        assert "(not shown: it is secret)" in str(refused.value)
    opts = TinyOptions.from_storage_options({"endpoint": "e", "token": "SECRET-TOKEN", "salt": b"ab"}, environ={})
    assert repr(opts) == (
        "TinyOptions(endpoint='e', token=<redacted>, timeout=30.0, parts=4, anon=False, region='eu', salt=<redacted>)"
    )
    assert opts.token == "SECRET-TOKEN" and opts.salt == b"\xab"  # the store itself gets the values


def test_a_required_option_missing_everywhere_says_both_ways_to_give_it() -> None:
    with pytest.raises(BackendError) as missing:
        TinyOptions.from_storage_options({"parts": 2}, environ={})
    assert str(missing.value) == (
        "tinyobj: storage_options['endpoint'] is required: give storage_options['endpoint'] or set the environment "
        "variable TINYOBJ_ENDPOINT"
    )
    # Incomplete configuration, not a value the store cannot use: the command line reports a failure, not misuse.
    assert not isinstance(missing.value, BackendOptionError)


def test_options_made_in_code_are_checked_the_same_and_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYOBJ_TOKEN", "env-token")
    opts = TinyOptions(endpoint="e", parts=3)
    assert (opts.token, opts.parts) == (None, 3)
    assert opts == TinyOptions.from_storage_options({"endpoint": "e", "parts": 3}, environ={})
    assert opts != TinyOptions(endpoint="e")
    with pytest.raises(BackendOptionError, match=r"storage_options\['parts'\] must be an int"):
        TinyOptions(endpoint="e", parts="3")
    with pytest.raises(AttributeError, match="frozen"):
        opts.parts = 5  # type: ignore[misc]
    # A store holding its options can be sent to another process (a save spread over several).
    assert pickle.loads(pickle.dumps(opts)) == opts
    wrapped = WrappedOptions.from_storage_options({"profile": "p"})
    assert pickle.loads(pickle.dumps(wrapped)).passthrough == {"profile": "p"}


def test_the_declaration_can_be_read() -> None:
    assert TinyOptions.names() == {
        "endpoint", "token", "timeout", "parts", "anon", "region", "salt", "client_kwargs"
    }  # fmt: skip
    assert TinyOptions.environment_variables()["token"] == ("TINYOBJ_TOKEN", "TINY_TOKEN")
    assert "client_kwargs" not in TinyOptions.environment_variables()


class _Library:
    """Stands for a client library whose keywords are known once it is imported."""

    imported = 0

    @classmethod
    def keywords(cls) -> frozenset[str]:
        cls.imported += 1
        return frozenset({"endpoint_url", "profile"})


class WrappedOptions(StorageOptions, store="wrapped"):
    key: Any = option(default=None, secret=True)

    @classmethod
    def passthrough_names(cls) -> frozenset[str]:
        return _Library.keywords()


def test_passed_through_names_are_accepted_unchecked_and_listed_in_hints() -> None:
    before = _Library.imported
    assert WrappedOptions.from_storage_options({"key": "k"}).as_dict() == {"key": "k"}
    assert _Library.imported == before  # only declared names given: the library is not asked
    opts = WrappedOptions.from_storage_options({"key": "AKIA-SECRET", "profile": {"nested": "x"}})
    assert opts.passthrough == {"profile": {"nested": "x"}}
    assert opts.as_dict() == {"key": "AKIA-SECRET", "profile": {"nested": "x"}}
    assert repr(opts) == "WrappedOptions(key=<redacted>, profile=...)"  # undeclared values are not shown either
    with pytest.raises(BackendOptionError, match=r"'endpoint_ur' \(did you mean 'endpoint_url'\?\); the wrapped "):
        WrappedOptions.from_storage_options({"endpoint_ur": "http://x"})


def test_a_subclass_inherits_the_options_and_the_store() -> None:
    class MoreOptions(TinyOptions):
        retries: int = 3

    opts = MoreOptions.from_storage_options({"endpoint": "e", "retries": 5}, environ={})
    assert (opts.endpoint, opts.retries) == ("e", 5)
    with pytest.raises(BackendOptionError, match="^tinyobj: unknown storage_options 'retrys'"):
        MoreOptions.from_storage_options({"endpoint": "e", "retrys": 5}, environ={})


def test_mistakes_in_a_declaration_fail_when_the_class_is_made() -> None:
    with pytest.raises(PluginError, match=r"name the store: class Nameless\(StorageOptions, store='mystore'\)"):

        class Nameless(StorageOptions):
            x: int = 1

    with pytest.raises(PluginError, match=r"Reserved\.names: the name is taken by StorageOptions itself"):

        class Reserved(StorageOptions, store="s"):
            names: str = "x"

    with pytest.raises(PluginError, match=r"Unreadable\.salt: environment variables hold text.*option\(check=\.\.\.\)"):

        class Unreadable(StorageOptions, store="s"):
            salt: bytes = option(default=b"", env="SALT")

    with pytest.raises(PluginError, match=r"env_unless names \['endpoint'\], which are not its options"):

        class Misnamed(StorageOptions, store="s", env_unless=("endpoint",)):
            url: str = ""

    with pytest.raises(PluginError, match=r"Unchecked\.hook: cannot check values against"):

        class Unchecked(StorageOptions, store="s"):
            hook: Port | None = None


# ------------------------------------------------------------------ a store using it, opened like any backend
class KeyedStore(ObjectStore):
    """An object store that only needs its options resolved (no request is made)."""

    store_name = "keyed"
    schemes = ("keyed",)

    class Options(StorageOptions, store="keyed"):
        account: str = option(env="KEYED_ACCOUNT")
        key: str | None = option(default=None, env="KEYED_KEY", secret=True)
        max_keys: int = 1000

    def __init__(self, opts: KeyedStore.Options, transfer: TransferOptions | None = None) -> None:
        super().__init__(transfer)
        self.opts = opts

    @classmethod
    def from_options(cls, options: CheckpointOptions) -> KeyedStore:
        return cls(cls.Options.from_storage_options(options.storage_options), cls.transfer_options(options))


@pytest.fixture
def keyed() -> Iterator[None]:
    class Plugin:
        @plugins.hookimpl
        def trackpoint_register_backends(self, register: Any) -> None:
            register(plugins.bundle_backend_spec(KeyedStore, name="keyed"))

    plugins.register(Plugin(), name="keyed-plugin")
    yield
    plugins.unregister("keyed-plugin")


@pytest.mark.usefixtures("keyed")
def test_a_store_gets_its_checked_options_when_its_backend_is_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYED_ACCOUNT", "acct")
    monkeypatch.setenv("KEYED_KEY", "s3cr3t-key")
    backend = plugins.open_backend("keyed://bucket/run", CheckpointOptions(storage_options={"max_keys": 10}))
    assert isinstance(backend, BundleBackend) and isinstance(backend.files, KeyedStore)
    assert backend.files.opts == KeyedStore.Options(account="acct", key="s3cr3t-key", max_keys=10)
    backend.close()
    with pytest.raises(BackendOptionError, match=r"^keyed: unknown storage_options 'max_key' \(did you mean"):
        plugins.open_backend("keyed://bucket/run", CheckpointOptions(storage_options={"max_key": 10}))
    with pytest.raises(BackendOptionError, match=r"^keyed: storage_options\['max_keys'\] must be an int"):
        tp.Checkpoint(w=tp.Variable([1.0])).save(
            "keyed://bucket/run/ckpt", options=CheckpointOptions(storage_options={"max_keys": math.inf})
        )
