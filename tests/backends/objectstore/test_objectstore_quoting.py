"""How messages quote a client's exception: one line, no credentials, the transport's words if it could not connect.

Every store gets this from the object-store layer without code of its own: S3 and GCS answers (through a
fault proxy in front of the emulators) whose error text runs over several lines and quotes a signed URL, a
store whose client keeps the transport's exception unchained (as azure-core does), and the
``describe_error`` hook that puts a service's error code first.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import pytest

from faultproxy import FaultProxy, Rule
from servers import ObjectStore as EmulatedStore
from trackpoint.backends.stores import ErrorKind, ObjectStore, TransferOptions
from trackpoint.errors import StorageError, TransientStorageError
from trackpoint.storage import VersionedBytes

pytestmark = [pytest.mark.timeout(60)]

#: What a signed URL carries after its path: a presigned S3 URL's signature, a GCS API key and signature.
SIGNED_QUERY = (
    "X-Amz-Credential=AKIAEXAMPLE%2Fus-east-1&X-Amz-Signature=SIGNATURE0123456789&key=APIKEY0123456789"
    "&X-Goog-Signature=GOOGSIG0123456789"
)
SECRETS = ("AKIAEXAMPLE", "SIGNATURE0123456789", "APIKEY0123456789", "GOOGSIG0123456789")
#: An error message as services and SDKs write them: a first line, then request ids and the rest. The first
#: line fits in the 200 characters the GCS store keeps of an answer's message.
TEXT = f"Request for https://storage.example.com/b/run/ckpt?{SIGNED_QUERY} is refused\nRequestId: R-1\nTime: T"
FAST = TransferOptions(retries=1, retry_base_delay=0.001, retry_max_delay=0.002, request_timeout=5.0)


def _one_line_without_secrets(message: str) -> None:
    assert "\n" not in message
    assert "RequestId" not in message and "Time:" not in message
    for secret in SECRETS:
        assert secret not in message
    assert "https://storage.example.com/b/run/ckpt?<redacted> is refused" in message


# ---------------------------------------------------------------------- S3 and GCS answers
def _error_body(store: EmulatedStore) -> tuple[bytes, str]:
    """A 400 answer of ``store`` whose message is :data:`TEXT`, in the store's own format."""
    if store.name == "s3":
        message = TEXT.replace("&", "&amp;")
        return f"<Error><Code>InvalidRequest</Code><Message>{message}</Message></Error>".encode(), "application/xml"
    return json.dumps({"error": {"code": 400, "message": TEXT}}).encode(), "application/json"


def test_an_answer_over_several_lines_holding_a_signed_url_is_quoted_in_one_line_without_it(
    make_files: Any, proxy: FaultProxy, store: EmulatedStore
) -> None:
    files = make_files(endpoint_url=proxy.url, retries=0)
    body, content_type = _error_body(store)
    proxy.add(Rule("GET", store.list_request, status=400, body=body, content_type=content_type, times=5))
    with pytest.raises(StorageError) as info:
        files.listdir(f"{store.bucket}/run")
    message = str(info.value)
    assert message.startswith(f"{store.name}: listing '{store.bucket}/run/' failed (")
    _one_line_without_secrets(message)


# ---------------------------------------------------------------------- a transport's error kept unchained
class Unchained(Exception):
    """A client library's error keeping the transport's as ``inner_exception``, unchained (as azure-core's)."""

    def __init__(self, inner: BaseException) -> None:
        super().__init__(str(inner))
        self.inner_exception = inner


class HTTPCloud(ObjectStore):
    """Reads each object with one ``requests`` GET of a signed URL, re-raising failures as azure-core does."""

    store_name = "httpcloud"
    schemes = ("httpcloud",)

    def __init__(self, endpoint: str) -> None:
        super().__init__(FAST)
        self.endpoint = endpoint

    def classify(self, exc: BaseException) -> ErrorKind:
        return "transient" if isinstance(exc, Unchained) else "other"

    def object_get(self, bucket: str, key: str) -> VersionedBytes | None:
        import requests

        try:
            answer = requests.get(f"{self.endpoint}/{bucket}/{key}?{SIGNED_QUERY}", timeout=5)
        except requests.ConnectionError as exc:
            error = Unchained(exc)
        else:
            return VersionedBytes(answer.content, answer.headers.get("ETag", ""))
        raise error  # outside the except clause: neither __cause__ nor __context__ is set


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("host", "transport", "advice"),
    [
        ("127.0.0.1", "NewConnectionError", "nothing accepted a connection there: check that the store's endpoint"),
        # .invalid is reserved (RFC 2606): no resolver answers it, so the lookup fails at once.
        ("no-such-host.invalid", "NameResolutionError", "the host name 'no-such-host.invalid' could not be resolved"),
    ],
)
def test_a_transport_error_kept_unchained_is_found_and_quoted(host: str, transport: str, advice: str) -> None:
    pytest.importorskip("requests")
    store = HTTPCloud(f"http://{host}:{_closed_port()}")
    try:
        with pytest.raises(TransientStorageError) as info:
            store.read("httpcloud://b/run/ckpt")
    finally:
        store.close()
    message = str(info.value)
    assert message.startswith("httpcloud: reading 'httpcloud://b/run/ckpt' still failed after 2 attempts in ")
    assert advice in message
    assert "overloaded" not in message
    # urllib3's words (host and port), not requests' and the client's, which quote the URL with its query.
    assert f"({transport}: HTTPConnection(host='{host}', port=" in message
    for secret in SECRETS:
        assert secret not in message


# ---------------------------------------------------------------------- describe_error
class ServiceError(Exception):
    """A client's error for an answer of the service, with the service's error code apart from its text."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.error_code = code


class CodedCloud(ObjectStore):
    """Every read is answered with :class:`ServiceError`; ``describe_error`` puts its code first."""

    store_name = "codedcloud"
    schemes = ("codedcloud",)

    def __init__(self) -> None:
        super().__init__(FAST)

    def classify(self, exc: BaseException) -> ErrorKind:
        return "other"

    def describe_error(self, exc: BaseException) -> str | None:
        return f"{exc.error_code}: {exc}" if isinstance(exc, ServiceError) else None

    def object_get(self, bucket: str, key: str) -> VersionedBytes | None:
        raise ServiceError("RequestRefused", TEXT)


def _read_message(store: ObjectStore) -> str:
    try:
        with pytest.raises(StorageError) as info:
            store.read(f"{store.schemes[0]}://b/run/ckpt")
    finally:
        store.close()
    return str(info.value)


def test_the_service_error_code_leads_the_quoted_line_and_is_still_cut_and_redacted() -> None:
    message = _read_message(CodedCloud())
    assert message.startswith(
        "codedcloud: reading 'codedcloud://b/run/ckpt' failed (ServiceError: RequestRefused: Request for "
    )
    _one_line_without_secrets(message)


class BrokenDescription(CodedCloud):
    def describe_error(self, exc: BaseException) -> str | None:
        raise KeyError("a bug in the hook")


def test_a_failing_description_quotes_the_exception_as_it_is(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="trackpoint.backends.stores.objectstore"):
        message = _read_message(BrokenDescription())
    assert message.startswith("codedcloud: reading 'codedcloud://b/run/ckpt' failed (ServiceError: Request for ")
    _one_line_without_secrets(message)
    assert any("BrokenDescription.describe_error raised" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------- queries and connection strings
class Refusing(ObjectStore):
    """Every read is answered with ``error``, of the kind ``kind``."""

    store_name = "refusing"
    schemes = ("refusing",)

    def __init__(self, error: Exception, kind: ErrorKind = "other") -> None:
        super().__init__(FAST)
        self.error = error
        self.kind: ErrorKind = kind

    def classify(self, exc: BaseException) -> ErrorKind:
        return self.kind

    def object_get(self, bucket: str, key: str) -> VersionedBytes | None:
        raise self.error


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # Queries whose first parameter is a bare word: S3's multipart calls, Azure's restype and comp.
        ("POST https://h/b/k?uploads&key=APIKEY0123456789 failed", "POST https://h/b/k?<redacted> failed"),
        (
            "GET https://h/c?restype&AWSAccessKeyId=AKIAEXAMPLE&Signature=SIGNATURE0123456789 failed",
            "GET https://h/c?<redacted> failed",
        ),
        ("PUT /c/k?comp&sig=SIGNATURE0123456789 failed", "PUT /c/k?<redacted> failed"),
        # Credentials outside a URL: an Azure connection string's account key and SAS, an API key.
        (
            "bad connection string AccountKey=APIKEY0123456789;SharedAccessSignature=SIGNATURE0123456789;x=y",
            "bad connection string AccountKey=<redacted>;SharedAccessSignature=<redacted>;x=y",
        ),
        ("refused: key=APIKEY0123456789", "refused: key=<redacted>"),
        # A query without values names the request and holds no credential.
        ("POST https://h/b/k?uploads failed", "POST https://h/b/k?uploads failed"),
    ],
)
def test_credentials_in_any_query_or_connection_string_are_not_quoted(text: str, shown: str) -> None:
    message = _read_message(Refusing(RuntimeError(text)))
    assert f"(RuntimeError: {shown})" in message
    for secret in SECRETS:
        assert secret not in message


def test_a_refused_conditional_request_is_quoted_in_one_line_without_credentials() -> None:
    message = _read_message(Refusing(RuntimeError(TEXT), kind="precondition"))
    assert message.startswith("refusing: a conditional request was refused (RuntimeError: Request for ")
    assert message.endswith("; re-read and retry")
    _one_line_without_secrets(message)
