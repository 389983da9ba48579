"""``StorageOptions``: a store's ``storage_options`` declared once, resolved from options, environment and defaults."""

from __future__ import annotations

import math
import pickle
import traceback
from collections.abc import Iterator
from typing import Any, Literal, NewType

import pytest

import trackpoint as tp
from trackpoint import plugins
from trackpoint.backends.bundle import BundleBackend
from trackpoint.backends.stores import ObjectStore, TransferOptions
from trackpoint.errors import BackendOptionError, InvalidArgumentError, PluginError
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
        ({"anon": "yes"}, "storage_options['anon'] is refused: must be a bool (got str 'yes'); give a valid value or "),
        ({"parts": True}, "storage_options['parts'] is refused: must be an int (got bool True)"),  # no number of parts
        ({"parts": 2.0}, "storage_options['parts'] is refused: must be an int (got float 2.0)"),
        ({"timeout": "5"}, "storage_options['timeout'] is refused: must be a float (got str '5')"),
        ({"timeout": -1}, "storage_options['timeout'] is refused: must be positive (got float -1.0)"),
        ({"region": "ap"}, "storage_options['region'] is refused: must be one of 'eu', 'us' (got str 'ap')"),
        ({"client_kwargs": []}, "storage_options['client_kwargs'] is refused: must be a dict (got list [])"),
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
        ("TINYOBJ_PARTS", "eight", "must be an int (got str 'eight')"),
        ("TINYOBJ_ANON", "maybe", "must be a bool (got str 'maybe')"),
        ("TINYOBJ_TIMEOUT", "-3", "must be positive (got float -3.0)"),
        ("TINYOBJ_REGION", "EU", "must be one of 'eu', 'us' (got str 'EU')"),
    ],
)
def test_an_unusable_environment_variable_is_named_with_its_option(variable: str, text: str, why: str) -> None:
    option_name = variable.removeprefix("TINYOBJ_").lower()
    with pytest.raises(BackendOptionError) as refused:
        TinyOptions.from_storage_options({}, environ={"TINYOBJ_ENDPOINT": "e", variable: text})
    assert str(refused.value) == (
        f"tinyobj: storage_options[{option_name!r}] (from the environment variable {variable}) is refused: {why}; "
        f"set {variable} to a valid value or unset it"
    )


def _port(value: Any) -> int:
    # Checks as users write them: a builtin conversion, or a message quoting the value.
    if not str(value).isdigit():
        raise ValueError(f"bad port {value!r}")
    return int(value)


class WordyOptions(StorageOptions, store="wordy"):
    """Options whose checks do not say "must ...", and quote what they were given."""

    port: Any = option(default=None, env="WORDY_PORT", check=_port)
    count: Any = option(default=None, env="WORDY_COUNT", check=int)


@pytest.mark.parametrize(
    ("given", "env", "message"),
    [
        (
            {"port": "80a"},
            {},
            "wordy: storage_options['port'] is refused: bad port '80a' (got str '80a'); give a valid value or leave "
            "it out",
        ),
        (
            {},
            {"WORDY_COUNT": "ten"},
            "wordy: storage_options['count'] (from the environment variable WORDY_COUNT) is refused: invalid literal "
            "for int() with base 10: 'ten' (got str 'ten'); set WORDY_COUNT to a valid value or unset it",
        ),
    ],
)
def test_a_checks_own_words_read_as_the_reason(given: dict[str, Any], env: dict[str, str], message: str) -> None:
    with pytest.raises(BackendOptionError) as refused:
        WordyOptions.from_storage_options(given, environ=env)
    assert str(refused.value) == message
    assert isinstance(refused.value.__cause__, ValueError)  # not a secret: the check's exception is kept


class VaultOptions(StorageOptions, store="vault"):
    """Secret options whose checks quote their input."""

    pin: Any = option(default=None, env="VAULT_PIN", secret=True, check=int)
    code: Any = option(default=None, env="VAULT_CODE", secret=True, check=_port)


@pytest.mark.parametrize(
    ("given", "env", "secret", "message"),
    [
        (  # read from the environment, refused by int(), which quotes its input
            {},
            {"VAULT_PIN": "hunter2-secret"},
            "hunter2-secret",
            "vault: storage_options['pin'] (from the environment variable VAULT_PIN) is refused: invalid literal for "
            "int() with base 10: <redacted> (got a value of type str, not shown: it is secret); set VAULT_PIN to a "
            "valid value or unset it",
        ),
        (  # given, refused by a check quoting its repr (escaped: not the value as written)
            {"code": "TOP\\SECRET\n42"},
            {},
            "TOP\\SECRET\n42",
            "vault: storage_options['code'] is refused: bad port <redacted> (got a value of type str, not shown: it is "
            "secret); give a valid value or leave it out",
        ),
        (  # given as bytes: quoted as b'...'
            {"pin": b"TOPSECRET-BYTES"},
            {},
            "TOPSECRET-BYTES",
            "vault: storage_options['pin'] is refused: invalid literal for int() with base 10: <redacted> (got a value "
            "of type bytes, not shown: it is secret); give a valid value or leave it out",
        ),
        (  # short, but quoted: its repr is replaced
            {"code": "x9"},
            {},
            "x9",
            "vault: storage_options['code'] is refused: bad port <redacted> (got a value of type str, not shown: it is "
            "secret); give a valid value or leave it out",
        ),
        (  # too short to be replaced reliably (it is in ordinary words): the reason is left out
            {"pin": "x"},
            {},
            "'x'",
            "vault: storage_options['pin'] is refused: the check's reason is not shown, as it could hold the secret "
            "value (got a value of type str, not shown: it is secret); give a valid value or leave it out",
        ),
    ],
)
def test_a_secret_quoted_by_its_check_reaches_neither_the_message_nor_a_traceback(
    given: dict[str, Any], env: dict[str, str], secret: str, message: str
) -> None:
    with pytest.raises(BackendOptionError) as refused:
        VaultOptions.from_storage_options(given, environ=env)
    assert str(refused.value) == message
    # Nothing chained: the check's exception, whose text holds the value, is neither cause nor context.
    assert refused.value.__cause__ is None and refused.value.__context__ is None
    printed = "".join(traceback.format_exception(refused.value))
    assert secret not in printed and repr(secret)[1:-1] not in printed


def test_secrets_never_reach_a_message_or_the_repr() -> None:
    for given, env in [
        ({"token": 12345678}, {}),  # a wrong type
        ({"salt": b"zz-SECRET"}, {}),  # refused by check (bytes.fromhex), as given
        ({}, {"TINYOBJ_SALT": "zz-not-hex-SECRET"}),  # and as read from the environment
    ]:
        with pytest.raises(BackendOptionError) as refused:
            TinyOptions.from_storage_options(given, environ={"TINYOBJ_ENDPOINT": "e", **env})
        assert "12345678" not in str(refused.value) and "SECRET" not in str(refused.value)
        assert ", not shown: it is secret)" in str(refused.value)
    opts = TinyOptions.from_storage_options({"endpoint": "e", "token": "SECRET-TOKEN", "salt": b"ab"}, environ={})
    assert repr(opts) == (
        "TinyOptions(endpoint='e', token=<redacted>, timeout=30.0, parts=4, anon=False, region='eu', salt=<redacted>)"
    )
    assert opts.token == "SECRET-TOKEN" and opts.salt == b"\xab"  # the store itself gets the values


def test_a_required_option_missing_everywhere_says_both_ways_to_give_it() -> None:
    with pytest.raises(BackendOptionError) as missing:
        TinyOptions.from_storage_options({"parts": 2}, environ={})
    assert str(missing.value) == (
        "tinyobj: storage_options['endpoint'] is required: give storage_options['endpoint'] or set the environment "
        "variable TINYOBJ_ENDPOINT"
    )
    # The error of the store's other options: left out or misspelt, it is a usage error (the command line's 2).
    assert isinstance(missing.value, InvalidArgumentError)


def test_options_made_in_code_are_checked_the_same_and_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYOBJ_TOKEN", "env-token")
    opts = TinyOptions(endpoint="e", parts=3)
    assert (opts.token, opts.parts) == (None, 3)
    assert opts == TinyOptions.from_storage_options({"endpoint": "e", "parts": 3}, environ={})
    assert opts != TinyOptions(endpoint="e")
    with pytest.raises(BackendOptionError, match=r"storage_options\['parts'\] is refused: must be an int"):
        TinyOptions(endpoint="e", parts="3")
    with pytest.raises(AttributeError, match="frozen"):
        opts.parts = 5  # type: ignore[misc]
    # A store holding its options can be sent to another process (a save spread over several).
    assert pickle.loads(pickle.dumps(opts)) == opts
    wrapped = WrappedOptions.from_storage_options({"profile": "p"})
    assert pickle.loads(pickle.dumps(wrapped)) == wrapped
    assert wrapped != WrappedOptions.from_storage_options({"profile": "q"})  # passed-through values count too


def test_the_public_surface_is_what_stores_use() -> None:
    # Declaring (option, env_unless, passthrough_names) and resolving (from_storage_options, the constructor):
    # nothing a store would call only from its tests.
    public = {name for name in dir(StorageOptions) if not name.startswith("_")}
    assert public == {"from_storage_options", "passthrough_names"}


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
    assert WrappedOptions.from_storage_options({"key": "k"}).key == "k"
    assert _Library.imported == before  # only declared names given: the library is not asked
    opts = WrappedOptions.from_storage_options({"key": "AKIA-SECRET", "profile": {"nested": "x"}})
    assert _Library.imported == before + 1
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

    with pytest.raises(PluginError, match=r"Reserved\.passthrough_names: the name is taken by StorageOptions itself"):

        class Reserved(StorageOptions, store="s"):
            passthrough_names: str = "x"  # type: ignore[assignment]

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
    with pytest.raises(BackendOptionError, match=r"^keyed: storage_options\['max_keys'\] is refused: must be an int"):
        tp.Checkpoint(w=tp.Variable([1.0])).save(
            "keyed://bucket/run/ckpt", options=CheckpointOptions(storage_options={"max_keys": math.inf})
        )
