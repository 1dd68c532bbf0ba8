"""Retrying HTTP for the remote data sources.

Retries with exponential backoff and full jitter on HTTP 408/429/5xx, dropped connections,
truncated bodies and failed checksums; honours ``Retry-After`` (seconds or an HTTP date) and
shares it between worker threads, so one 429 slows every worker down instead of each of them
hammering the server in turn. URLs in messages lose their query string (signed download URLs
carry their signature there) and registered secrets are masked: nothing this module logs or
raises contains a credential, not even what an error response echoes of the request.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3.exceptions

from imgae_dx.errors import UserError, redact, register_secret  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Statuses worth another try: timeouts, rate limits and server-side failures.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def public_url(url: str) -> str:
    """``url`` without user-info, query string and fragment (signatures, tokens), for manifests."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class HTTPStatusError(UserError):
    """A response with an error status; ``retry_after`` in seconds when the server sent one.

    The message is one line: the status, the URL without its query string and the start of
    what the server said, redacted (a gateway may echo the request's credentials back). One the
    fetch cannot get past (a 404 on the archive, say) reaches the user as that line.
    """

    def __init__(
        self,
        status: int,
        url: str,
        *,
        retry_after: float | None = None,
        detail: str = "",
        truncated: bool = False,
    ):
        self.status = int(status)
        self.url = public_url(url)
        self.retry_after = retry_after
        msg = f"HTTP {self.status} from {self.url}"
        detail = " ".join(redact(detail, truncated=truncated).split())
        self.detail = detail
        if detail:
            msg += f": {detail[:200]}"
        super().__init__(msg)


def status_error(exc: requests.HTTPError) -> HTTPStatusError:
    """``exc`` (requests', or kagglesdk's, which it builds from the response's JSON ``message``)
    as an :class:`HTTPStatusError`: redacted, and holding neither the response nor the request
    (whose headers carry the credentials). Raise it outside the ``except`` block, so that the
    original is not kept as its context either."""
    resp = exc.response
    status = resp.status_code if resp is not None else 0
    detail = str(exc)
    if resp is not None and detail.startswith(f"{status} "):  # requests' own "<status> ... for url"
        detail = resp.reason or ""
    url = (resp.url if resp is not None else "") or ""
    retry_after = retry_after_seconds(resp.headers.get("Retry-After")) if resp is not None else None
    return HTTPStatusError(status, url, retry_after=retry_after, detail=detail)


class TransferError(Exception):
    """The bytes that arrived are wrong (truncated, bad size or checksum): worth another try."""


class RetriesExhausted(UserError, RuntimeError):
    """Every attempt failed; the message says what, how often and the last error."""


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header: delta-seconds or an HTTP date; ``None`` if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _server_message(body: str) -> str:
    """The ``message`` of a JSON error body (Kaggle's ``{"code": ..., "message": ...}``), else
    the body."""
    try:
        obj = json.loads(body)
    except ValueError:
        return body
    message = obj.get("message") if isinstance(obj, dict) else None
    return message if isinstance(message, str) and message else body


def raise_for_status(resp: requests.Response, url: str | None = None) -> None:
    """Raise :class:`HTTPStatusError` for a 4xx/5xx response (reading at most 1 kB of its body)."""
    if resp.status_code < 400:
        return
    detail = ""
    try:
        if resp.raw is not None and not resp.raw.closed:
            detail = resp.raw.read(1024, decode_content=True).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the body is only decoration for the message
        detail = ""
    finally:
        resp.close()
    raise HTTPStatusError(
        resp.status_code,
        url or resp.url,
        retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
        detail=_server_message(detail.strip()),
        truncated=True,  # the body may go on: a secret may straddle the cut
    )


def status_of(exc: BaseException) -> int | None:
    """HTTP status behind ``exc`` (ours or a ``requests.HTTPError``), else ``None``."""
    if isinstance(exc, HTTPStatusError):
        return exc.status
    resp = getattr(exc, "response", None)
    if isinstance(exc, requests.HTTPError) and resp is not None:
        return int(resp.status_code)
    return None


def _retry_after_of(exc: BaseException) -> float | None:
    if isinstance(exc, HTTPStatusError):
        return exc.retry_after
    resp = getattr(exc, "response", None)
    if resp is not None and getattr(resp, "headers", None) is not None:
        return retry_after_seconds(resp.headers.get("Retry-After"))
    return None


#: What a download host answers for a signed URL that expired or was revoked: Cloud Storage says
#: ``400`` with ``<Code>ExpiredToken</Code>`` once ``X-Goog-Expires`` has passed, ``403`` for a bad
#: or revoked signature; S3-style hosts say 401/403; some CDNs 410.
URL_EXPIRED_STATUS = (401, 403, 410)


def signed_url_expired(exc: BaseException) -> bool:
    """Whether ``exc`` says the download URL no longer works (ask the API for a fresh one)."""
    status = status_of(exc)
    if status in URL_EXPIRED_STATUS:
        return True
    return status == 400 and "expiredtoken" in getattr(exc, "detail", "").lower()


def is_retryable(exc: BaseException) -> bool:
    status = status_of(exc)
    if status is not None:
        return status in RETRY_STATUS or status >= 500
    return isinstance(
        exc,
        (
            TransferError,
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
            urllib3.exceptions.ProtocolError,
            urllib3.exceptions.ReadTimeoutError,
            http.client.IncompleteRead,
            ConnectionError,
            TimeoutError,
        ),
    )


def describe(exc: BaseException) -> str:
    name = type(exc).__name__
    return redact(f"{name}: {exc}" if not isinstance(exc, HTTPStatusError) else exc)


@dataclass
class RetryPolicy:
    """How hard to try. Shared by all workers of one fetch (the Retry-After gate is shared).

    ``max_retries``, ``max_backoff`` and ``timeout`` come from ``data.kaggle`` (the schema checks
    their ranges). ``max_backoff`` caps the exponential backoff; a ``Retry-After`` is always
    honoured in full, unless it exceeds ``max_retry_after`` (an account throttled for an hour):
    then the fetch stops with a message saying so, keeping what is complete for the next run.
    """

    max_retries: int = 8
    backoff_base: float = 0.5
    max_backoff: float = 60.0
    max_retry_after: float = 900.0
    timeout: float = 60.0
    connect_timeout: float = 10.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    _gate_until: float = field(default=0.0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    retries: int = field(default=0, init=False)

    @property
    def timeouts(self) -> tuple[float, float]:
        """``(connect, read)`` for requests."""
        return (min(self.connect_timeout, self.timeout), self.timeout)

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in ``[0, min(max_backoff, base * 2**attempt)]``."""
        cap = min(self.max_backoff, self.backoff_base * (2.0 ** min(attempt, 30)))
        with self._lock:
            return self.rng.uniform(0.0, cap)

    def hold(self, seconds: float) -> None:
        """Nobody sends a request for ``seconds`` (a server's Retry-After)."""
        with self._lock:
            self._gate_until = max(self._gate_until, time.monotonic() + seconds)

    def wait_gate(self) -> None:
        while True:
            with self._lock:
                left = self._gate_until - time.monotonic()
            if left <= 0:
                return
            self.sleep(left)

    def _count_retry(self) -> None:
        with self._lock:
            self.retries += 1


def call(
    fn: Callable[[], T],
    policy: RetryPolicy,
    what: str,
    *,
    retryable: Callable[[BaseException], bool] = is_retryable,
) -> T:
    """``fn()`` until it succeeds, retrying failures that ``retryable`` accepts.

    Non-retryable errors propagate unchanged (callers branch on 401/404...); when the retries
    run out, :class:`RetriesExhausted` names ``what``, the attempts and the last error.
    """
    attempt = 0
    while True:
        policy.wait_gate()
        try:
            return fn()
        except Exception as exc:
            if not retryable(exc):
                raise
            retry_after = _retry_after_of(exc)
            if retry_after is not None and retry_after > policy.max_retry_after:
                raise RetriesExhausted(
                    f"{what}: the server asks to wait {retry_after:.0f} s ({describe(exc)}), more "
                    f"than {policy.max_retry_after:.0f} s: the account is probably rate-limited; "
                    "rerun later (everything already complete is kept)"
                ) from exc
            if attempt >= policy.max_retries:
                raise RetriesExhausted(
                    f"{what}: giving up after {attempt + 1} attempt(s); last error: {describe(exc)}"
                ) from exc
            delay = policy.backoff(attempt)
            if retry_after is not None:
                # Honour it for every worker, plus a little jitter against a thundering herd.
                policy.hold(retry_after)
                delay = retry_after + policy.backoff(0) * 0.1
            attempt += 1
            policy._count_retry()
            log.warning(
                "%s: %s; retry %d/%d in %.2f s",
                what,
                describe(exc),
                attempt,
                policy.max_retries,
                delay,
            )
            policy.sleep(delay)


def iter_body(resp: requests.Response, chunk_size: int = 1 << 18) -> Iterator[bytes]:
    """Raw body chunks as they arrive (no content decoding: we want the bytes the server stored).

    ``read1`` returns what the socket has instead of blocking for ``chunk_size`` bytes, so
    progress (and a member completed just before a stall) is never held back in a buffer.
    """
    raw = resp.raw
    read = getattr(raw, "read1", None) or raw.read
    while True:
        chunk = read(chunk_size, decode_content=False)
        if not chunk:
            return
        yield chunk


class BodyReader:
    """Exact reads over a streamed response body; a short body raises :class:`TransferError`."""

    def __init__(
        self, resp: requests.Response, expected: int | None = None, chunk_size: int = 1 << 18
    ):
        self._it = iter_body(resp, chunk_size)
        self._buf = bytearray()
        self._url = public_url(resp.url or "")
        self.expected = expected
        self.consumed = 0

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            chunk = next(self._it, b"")
            if not chunk:
                raise TransferError(
                    f"body of {self._url} ended after {self.consumed + len(self._buf)} bytes"
                    + (f" of {self.expected}" if self.expected is not None else "")
                )
            self._buf += chunk

    def read_exact(self, n: int) -> bytes:
        self._fill(n)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self.consumed += n
        return out

    def iter_exact(self, n: int, chunk: int = 1 << 18) -> Iterator[bytes]:
        """Yield exactly ``n`` bytes in pieces (bounded memory)."""
        left = n
        while left > 0:
            if not self._buf:
                self._fill(1)
            take = min(left, len(self._buf), chunk)
            out = bytes(self._buf[:take])
            del self._buf[:take]
            self.consumed += take
            left -= take
            yield out

    def skip(self, n: int) -> None:
        for _ in self.iter_exact(n):
            pass


def new_session(pool: int = 4) -> requests.Session:
    """A plain session (no credentials, no retries of its own: :func:`call` retries)."""
    s = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=pool, pool_maxsize=pool, max_retries=0)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.headers["User-Agent"] = "imgae-dx"
    # Ranged reads of compressed members must arrive byte for byte as stored.
    s.headers["Accept-Encoding"] = "identity"
    return s
