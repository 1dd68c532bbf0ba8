"""A fake Kaggle on loopback: the API the kagglesdk client speaks, and a download host.

- ``POST /api/v1/datasets.DatasetApiService/{ListDatasetFiles,DownloadDataset}`` with the SDK's
  JSON bodies, authenticated by ``Authorization: Bearer <token>`` or HTTP basic
  ``<username>:<key>`` (401 otherwise). ``DownloadDataset`` answers ``302`` to a signed URL on
  ``/storage/...``: the whole dataset as one zip, or one file (some can answer 404, some come
  zipped, like Kaggle's).
- ``GET /storage/...`` serves the zip (or a file) and answers Range requests (206,
  Content-Range, suffix ranges, 416), with ``x-goog-hash: md5=...`` like Cloud Storage.
- Counts requests and body bytes per kind (``api``, ``archive``, ``files``) and logs every
  request's range, so tests can see exactly what was transferred.
- Injects faults on demand: an error status (429 with ``Retry-After``, 500...), a connection
  dropped mid-body, a corrupted byte, a body that stalls until the server stops, and a quota
  of single-file downloads after which every one is throttled.
- ``echo`` plays a misconfigured gateway: an API call answers ``status`` with the request's
  ``Authorization`` header echoed back in every form a credential travels in (as sent, the
  ``user:key`` a Basic header decodes to, URL-encoded in and out of a query string, in a
  response header, with JSON's optional ``\\/`` escapes); a 3xx redirects to the download URL
  with the header appended to its query string.

Only binds to 127.0.0.1. ``tiny_nih`` makes a small NIH-format dataset (real formats, real
shard boundaries, noise PNGs) to serve.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import secrets
import socket
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import numpy as np
import pandas as pd
from PIL import Image

from imgae_dx.data import nih

DEFAULT_TOKEN = "KGAT_fake_token_0123456789abcdef"
DEFAULT_USER, DEFAULT_KEY = "fake-user", "fakekey0123456789abcdef"
DEFAULT_REFRESH_TOKEN = "KGRT_fake_refresh_0123456789abcdef"
API_PREFIX = "/api/v1/datasets.DatasetApiService/"
OAUTH_EXCHANGE = "/api/v1/users.AccountService/GenerateAccessToken"


# -- a tiny NIH-format dataset --------------------------------------------------------------------
FINDINGS = ["Mass", "Effusion", "Nodule|Atelectasis", "Cardiomegaly", "Infiltration"]
#: (patient id, number of images): real shard boundaries; patient 1335 spans images_001/002.
DEFAULT_PATIENTS: tuple[tuple[int, int], ...] = (
    *((p, 3) for p in range(1, 11)),
    (1335, 9),  # 00001335_000…006 in images_001, _007…_008 in images_002
    *((p, 3) for p in range(1336, 1348)),
    *((p, 3) for p in range(3924, 3934)),
    *((p, 3) for p in range(6586, 6596)),
    *((p, 3) for p in range(9233, 9243)),
)


def noise_png(rng: np.random.Generator, size: int) -> bytes:
    img = Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def tiny_nih(
    patients: tuple[tuple[int, int], ...] = DEFAULT_PATIENTS,
    *,
    image_size: int = 40,
    seed: int = 0,
) -> dict[str, bytes]:
    """Files of a small NIH mirror in the Kaggle layout: metadata + ``images_00N/images/*.png``.

    Every patient's first image is "No Finding"; every third patient is in ``test_list.txt``.
    """
    rng = np.random.default_rng(seed)
    rows, files, test, trainval, boxes = [], {}, [], [], []
    for i, (pid, n) in enumerate(patients):
        for fu in range(n):
            name = nih.image_name(pid, fu)
            findings = (
                nih.NO_FINDING
                if fu == 0 or rng.random() < 0.4
                else FINDINGS[int(rng.integers(len(FINDINGS)))]
            )
            rows.append(
                {
                    "image": name,
                    "findings": findings,
                    "follow_up": fu,
                    "patient_id": pid,
                    "age": int(rng.integers(20, 80)),
                    "sex": "MF"[int(rng.integers(2))],
                    "view": "PA" if rng.random() < 0.6 else "AP",
                    "width": 1024,
                    "height": 1024,
                    "spacing_x": 0.143,
                    "spacing_y": 0.143,
                }
            )
            (test if i % 3 == 0 else trainval).append(name)
            files[nih.image_relpath(name)] = noise_png(rng, image_size)
            if findings == "Infiltration" and len(boxes) < 3:
                boxes.append(
                    {
                        "image": name,
                        "finding": "Infiltration",
                        "x": 10.0,
                        "y": 12.5,
                        "w": 100.0,
                        "h": 80.0,
                    }
                )
    df = pd.DataFrame(rows)
    files[nih.DATA_ENTRY] = nih.format_data_entry(df).encode()
    files[nih.BBOX_LIST] = nih.format_bbox(
        pd.DataFrame(boxes, columns=["image", "finding", "x", "y", "w", "h"])
    ).encode()
    files[nih.TRAIN_VAL_LIST] = "".join(f"{n}\n" for n in trainval).encode()
    files[nih.TEST_LIST] = "".join(f"{n}\n" for n in test).encode()
    return files


def build_zip(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """The dataset as Kaggle serves it: one zip, members in sorted order (metadata at the top)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name in sorted(files):
            zf.writestr(name, files[name])
    return buf.getvalue()


# -- the server -----------------------------------------------------------------------------------
@dataclass
class Fault:
    target: str  # "api" | "archive" | "files"
    action: str  # "status" | "echo" (api) | "drop" | "corrupt" | "stall"
    count: int = 1
    status: int = 500
    retry_after: str | None = None
    after_bytes: int = 0
    api_method: str | None = None
    skip: int = 0  # let this many matching requests through first


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeKaggle


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_POST(self) -> None:  # noqa: N802
        with self.server.fake._serving():
            self.server.fake._post(self)

    def do_GET(self) -> None:  # noqa: N802
        with self.server.fake._serving():
            self.server.fake._get(self, head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        with self.server.fake._serving():
            self.server.fake._get(self, head=True)


class FakeKaggle:
    def __init__(
        self,
        files: dict[str, bytes],
        *,
        owner: str = "nih-chest-xrays",
        slug: str = "data",
        version: int = 3,
        token: str = DEFAULT_TOKEN,
        username: str = DEFAULT_USER,
        key: str = DEFAULT_KEY,
        compression: int = zipfile.ZIP_DEFLATED,
        missing_files: tuple[str, ...] = (),
        zipped_files: tuple[str, ...] = (),
        per_file_quota: int | None = None,
        chunk: int = 64 * 1024,
    ):
        self.files = dict(files)
        self.archive = build_zip(self.files, compression)
        self._archive_md5 = hashlib.md5(self.archive).hexdigest()
        self.owner, self.slug, self.version = owner, slug, version
        self.token, self.username, self.key = token, username, key
        self.missing_files = set(missing_files)
        self.zipped_files = set(zipped_files)
        self.per_file_quota = per_file_quota
        self.chunk = chunk
        self._lock = threading.Lock()
        # A response reaches the client before its handler logs it, so readers of the counters
        # first wait for handlers still running (``_settle``); stalled ones do not count.
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self.faults: list[Fault] = []
        self._entries: list[dict[str, Any]] = []
        self._bytes: Counter[str] = Counter()
        self.per_file_calls = 0
        self.release = threading.Event()
        self.stalled = threading.Event()
        self._sig = secrets.token_hex(8)
        self.expired_status = 403
        # OAuth (``kaggle auth login``): a refresh token is exchanged for short-lived access
        # tokens; ``oauth_expire_after`` API calls with one, every token issued so far expires.
        self.refresh_token = DEFAULT_REFRESH_TOKEN
        self.oauth_tokens: set[str] = set()
        self.oauth_expire_after: int | None = None
        self._oauth_calls = 0
        #: Signed URLs expire after this many ranges of the archive were served (None: never),
        #: as a multi-hour fetch outlives many of them.
        self.expire_every: int | None = None
        self._ranges_served = 0
        self._httpd: _Server | None = None
        self._servers: list[tuple[_Server, threading.Thread]] = []

    # lifecycle ------------------------------------------------------------------------------
    def start(self) -> FakeKaggle:
        # Two listeners, as Kaggle's API and Cloud Storage are two hosts: a redirect from one
        # to the other crosses origins, so the client must drop the credentials on the way.
        for _ in range(2):
            httpd = _Server(("127.0.0.1", 0), _Handler)
            httpd.fake = self
            thread = threading.Thread(
                target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._servers.append((httpd, thread))
        self._httpd = self._servers[0][0]
        return self

    def stop(self) -> None:
        self.release.set()
        for httpd, thread in self._servers:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)
        self._servers.clear()

    def __enter__(self) -> FakeKaggle:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_endpoint(self) -> str:
        """The download host: another origin than :attr:`endpoint`."""
        return f"http://127.0.0.1:{self._servers[1][0].server_address[1]}"

    def archive_url(self) -> str:
        return f"{self.storage_endpoint}/storage/{self.owner}/{self.slug}/archive.zip?X-Goog-Signature={self._sig}&X-Goog-Expires=600"

    def file_url(self, path: str) -> str:
        suffix = ".zip" if path in self.zipped_files else ""
        return (
            f"{self.storage_endpoint}/storage/{self.owner}/{self.slug}/files/{quote(path)}{suffix}"
            f"?X-Goog-Signature={self._sig}&X-Goog-Expires=600"
        )

    # knobs and counters ---------------------------------------------------------------------
    def inject(self, target: str, action: str = "status", **kw: Any) -> None:
        with self._lock:
            self.faults.append(Fault(target, action, **kw))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def expire_urls(self, status: int | None = None) -> None:
        """Signed URLs handed out so far stop working, like expired Cloud Storage links: they
        answer ``status`` (default :attr:`expired_status`; 400 is Cloud Storage's
        ``ExpiredToken``, 403 a bad signature)."""
        if status is not None:
            self.expired_status = status
        self._sig = secrets.token_hex(8)

    def _refuse_signature(self, h: _Handler, kind: str) -> None:
        if self.expired_status == 400:  # what Cloud Storage answers once X-Goog-Expires passed
            body = (
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code>"
                b"<Message>Invalid argument.</Message><Details>The provided token has expired."
                b"</Details></Error>"
            )
            self._send(h, 400, body, {"Content-Type": "application/xml; charset=UTF-8"})
            return self._log(h, kind, 400, len(body))
        msg = {"code": self.expired_status, "message": "SignatureDoesNotMatch / expired"}
        return self._json(h, self.expired_status, msg, kind=kind)

    def _count_range(self, kind: str, status: int) -> None:
        with self._lock:
            if kind != "archive" or status != 206 or not self.expire_every:
                return
            self._ranges_served += 1
            if self._ranges_served % self.expire_every == 0:
                self._sig = secrets.token_hex(8)

    @contextmanager
    def _serving(self) -> Iterator[None]:
        self._count_serving(+1)
        try:
            yield
        finally:
            self._count_serving(-1)

    def _count_serving(self, delta: int) -> None:
        with self._lock:
            self._in_flight += delta
            self._idle.notify_all()

    def _settle(self, timeout: float = 10.0) -> None:
        """Wait (at most ``timeout`` s) until every request being answered has been logged."""
        with self._lock:
            self._idle.wait_for(lambda: self._in_flight <= 0, timeout=timeout)

    @property
    def log(self) -> list[dict[str, Any]]:
        self._settle()
        with self._lock:
            return list(self._entries)

    @property
    def bytes(self) -> Counter[str]:
        self._settle()
        with self._lock:
            return Counter(self._bytes)

    def reset_counters(self) -> None:
        self._settle()
        with self._lock:
            self._entries.clear()
            self._bytes.clear()

    def requests(self, kind: str | None = None, status: int | None = None) -> list[dict[str, Any]]:
        self._settle()
        with self._lock:
            return [
                r
                for r in self._entries
                if (kind is None or r["kind"] == kind) and (status is None or r["status"] == status)
            ]

    def ranged_bytes(self, kind: str = "archive") -> int:
        """Body bytes of the Range requests answered (206). Following ``DownloadDataset``'s
        redirect also GETs the whole file, which the client closes after the headers; the
        server may have pushed some of that body into the socket before it noticed, so those
        bytes are not a measure of what the client read."""
        return sum(r["bytes"] for r in self.requests(kind, 206))

    def member_ranges(self) -> list[tuple[int, int]]:
        """``[start, end)`` of every archive range request that was answered 206."""
        return [(r["range"][0], r["range"][1]) for r in self.requests("archive", 206)]

    def _take_fault(self, target: str, api_method: str | None = None) -> Fault | None:
        with self._lock:
            for f in list(self.faults):
                if (
                    f.target != target
                    or f.count <= 0
                    or (f.api_method is not None and f.api_method != api_method)
                ):
                    continue
                if f.skip > 0:
                    f.skip -= 1
                    continue
                f.count -= 1
                if f.count == 0:
                    self.faults.remove(f)
                return f
        return None

    def _log(
        self,
        h: _Handler,
        kind: str,
        status: int,
        nbytes: int = 0,
        rng: tuple[int, int] | None = None,
        **extra: Any,
    ) -> None:
        with self._lock:
            self._entries.append(
                {
                    "method": h.command,
                    "path": urlsplit(h.path).path,
                    "kind": kind,
                    "status": status,
                    "bytes": nbytes,
                    "range": rng,
                    "user_agent": h.headers.get("User-Agent", ""),
                    "authorization": bool(h.headers.get("Authorization")),
                    **extra,
                }
            )
            self._bytes[kind] += nbytes

    # responses ------------------------------------------------------------------------------
    @staticmethod
    def _send(
        h: _Handler, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if body and h.command != "HEAD":
            h.wfile.write(body)

    def _json(
        self, h: _Handler, status: int, obj: dict[str, Any], kind: str = "api", **extra: Any
    ) -> None:
        body = json.dumps(obj).encode()
        self._send(h, status, body, {"Content-Type": "application/json"})
        self._log(h, kind, status, len(body), **extra)

    def _authorized(self, h: _Handler) -> bool:
        auth = h.headers.get("Authorization", "")
        if auth == f"Bearer {self.token}":
            return True
        if auth.startswith("Bearer ") and auth[7:] in self.oauth_tokens:
            with self._lock:
                self._oauth_calls += 1
                if self.oauth_expire_after and self._oauth_calls >= self.oauth_expire_after:
                    self.oauth_tokens.clear()  # this call still passes; the next ones do not
                    self.oauth_expire_after = None
            return True
        if auth.startswith("Basic "):
            try:
                user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return user == self.username and key == self.key
        return False

    def _post(self, h: _Handler) -> None:
        n = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(n) if n else b""
        path = urlsplit(h.path).path
        if path == OAUTH_EXCHANGE:
            return self._exchange(h, raw)
        if not path.startswith(API_PREFIX):
            return self._json(h, 404, {"code": 404, "message": "Not found"})
        method = path[len(API_PREFIX) :]
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._json(h, 400, {"code": 400, "message": "bad JSON"}, api=method)
        if not self._authorized(h):
            return self._json(h, 401, {"code": 401, "message": "Unauthenticated"}, api=method)
        fault = self._take_fault("api", method)
        if fault is not None and fault.action == "echo":
            return self._echo(h, fault, method, body.get("fileName"))
        if fault is not None and fault.action == "status":
            hdr = {"Content-Type": "application/json"}
            if fault.retry_after is not None:
                hdr["Retry-After"] = fault.retry_after
            payload = json.dumps({"code": fault.status, "message": "injected"}).encode()
            self._send(h, fault.status, payload, hdr)
            return self._log(h, "api", fault.status, len(payload), api=method)
        if (
            body.get("ownerSlug") != self.owner
            or body.get("datasetSlug") != self.slug
            or (body.get("datasetVersionNumber") not in (None, self.version))
        ):
            return self._json(h, 404, {"code": 404, "message": "Dataset not found"}, api=method)
        if method == "ListDatasetFiles":
            names = sorted(self.files)
            start = int(body.get("pageToken") or 0)
            size = int(body.get("pageSize") or 20)
            page = names[start : start + size]
            nxt = str(start + size) if start + size < len(names) else ""
            return self._json(
                h,
                200,
                {
                    "datasetFiles": [
                        {
                            "ref": f"{self.owner}/{self.slug}/{p}",
                            "name": p,
                            "totalBytes": len(self.files[p]),
                            "creationDate": "2018-02-21T20:52:23Z",
                        }
                        for p in page
                    ],
                    "nextPageToken": nxt,
                },
                api=method,
            )
        if method == "DownloadDataset":
            name = body.get("fileName")
            if name is None:
                location = self.archive_url()
            else:
                with self._lock:
                    self.per_file_calls += 1
                    over = (
                        self.per_file_quota is not None
                        and self.per_file_calls > self.per_file_quota
                    )
                if over:
                    payload = json.dumps({"code": 429, "message": "Too many requests"}).encode()
                    self._send(
                        h, 429, payload, {"Content-Type": "application/json", "Retry-After": "3600"}
                    )
                    return self._log(h, "api", 429, len(payload), api=method, file=name)
                if name not in self.files or name in self.missing_files:
                    return self._json(
                        h, 404, {"code": 404, "message": "File not found"}, api=method, file=name
                    )
                location = self.file_url(name)
            self._send(h, 302, b"", {"Location": location})
            return self._log(h, "api", 302, 0, api=method, file=name)
        return self._json(h, 404, {"code": 404, "message": f"no method {method}"}, api=method)

    def _exchange(self, h: _Handler, raw: bytes) -> None:
        """``GenerateAccessToken``: a fresh access token for the refresh token of a login."""
        method = "GenerateAccessToken"
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        if body.get("refreshToken") != self.refresh_token:
            return self._json(h, 401, {"code": 401, "message": "Unauthenticated"}, api=method)
        token = f"KGAT_oauth_{secrets.token_hex(12)}"
        with self._lock:
            self.oauth_tokens.add(token)
        reply = {"token": token, "expiresIn": 43200, "userName": self.username}
        return self._json(h, 200, reply, api=method)

    def _echo(self, h: _Handler, fault: Fault, method: str, file_name: str | None) -> None:
        """Answer ``fault.status`` with the request's credentials in it (see the module docstring)."""
        auth = h.headers.get("Authorization", "")
        encoded = quote(auth, safe="")
        if 300 <= fault.status < 400:
            url = self.file_url(file_name) if file_name else self.archive_url()
            location = f"{url}&authorization={encoded}"
            self._send(h, fault.status, b"", {"Location": location})
            return self._log(h, "api", fault.status, 0, api=method, fault="echo")
        scheme, _, value = auth.partition(" ")
        decoded = base64.b64decode(value).decode() if scheme == "Basic" else value
        message = (
            f"gateway refused the request (Authorization: {auth}; credentials {decoded}); "
            f"trace https://gateway.invalid/trace?authorization={encoded} form authorization={encoded}"
        )
        obj = {
            "code": fault.status,
            "message": message,
            "request": {"headers": {"Authorization": auth}},
        }
        body = json.dumps(obj).replace("/", "\\/").encode()  # escaped slashes, as PHP writes JSON
        headers = {
            "Content-Type": "application/json",
            "X-Echo-Authorization": auth,
            "WWW-Authenticate": f'{scheme} realm="kaggle", error_description="{decoded}"',
        }
        self._send(h, fault.status, body, headers)
        return self._log(h, "api", fault.status, len(body), api=method, fault="echo")

    def _get(self, h: _Handler, head: bool) -> None:
        parts = urlsplit(h.path)
        prefix = f"/storage/{self.owner}/{self.slug}/"
        if not parts.path.startswith(prefix):
            return self._json(h, 404, {"code": 404, "message": "Not found"}, kind="other")
        rest = unquote(parts.path[len(prefix) :])
        if rest == "archive.zip":
            kind, data, ctype = "archive", self.archive, "application/zip"
        elif rest.startswith("files/"):
            kind, path = "files", rest[len("files/") :]
            zipped = path.endswith(".zip") and path[:-4] in self.zipped_files
            if zipped:
                path = path[:-4]
            if path not in self.files:
                return self._json(h, 404, {"code": 404, "message": "No such object"}, kind="files")
            data = self.files[path]
            if zipped:
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                    zf.writestr(path.rsplit("/", 1)[-1], data)
                data = buf.getvalue()
            ctype = "application/octet-stream"
        else:
            return self._json(h, 404, {"code": 404, "message": "Not found"}, kind="other")
        if parse_qs(parts.query).get("X-Goog-Signature") != [self._sig]:
            return self._refuse_signature(h, kind)
        fault = self._take_fault(kind)
        if fault is not None and fault.action == "status":
            hdr = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self._send(h, fault.status, b"injected", hdr)
            return self._log(h, kind, fault.status, 8)

        total = len(data)
        status, start, end = 200, 0, total
        rng_header = h.headers.get("Range")
        if rng_header:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng_header.strip())
            if not m or (m.group(1) == "" and m.group(2) == ""):
                self._send(h, 416, b"", {"Content-Range": f"bytes */{total}"})
                return self._log(h, kind, 416)
            if m.group(1) == "":
                start, end = max(0, total - int(m.group(2))), total
            else:
                start = int(m.group(1))
                end = min(total, int(m.group(2)) + 1) if m.group(2) else total
            if start >= total or start >= end:
                self._send(h, 416, b"", {"Content-Range": f"bytes */{total}"})
                return self._log(h, kind, 416)
            status = 206
        body = data[start:end]
        if fault is not None and fault.action == "corrupt" and body:
            mid = len(body) // 2
            body = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1 :]
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        etag = self._archive_md5 if kind == "archive" else hashlib.md5(data).hexdigest()
        h.send_header("ETag", f'"{etag}"')
        if kind == "files":
            h.send_header(
                "x-goog-hash",
                f"crc32c=AAAAAA==,md5={base64.b64encode(hashlib.md5(data).digest()).decode()}",
            )
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end - 1}/{total}")
        h.end_headers()
        if head:
            return self._log(h, kind, status, 0, (start, end))
        limit = len(body)
        if fault is not None and fault.action in ("drop", "stall"):
            limit = min(limit, fault.after_bytes)
        sent = 0
        try:
            while sent < limit:
                piece = body[sent : min(limit, sent + self.chunk)]
                h.wfile.write(piece)
                sent += len(piece)
            h.wfile.flush()
            if fault is not None and fault.action == "stall":
                self.stalled.set()
                self._count_serving(-1)  # a stalled body must not hold up the counters
                try:
                    self.release.wait(timeout=60)
                finally:
                    self._count_serving(+1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self._log(h, kind, status, sent, (start, end), fault=fault.action if fault else None)
            self._count_range(kind, status)
        if sent < len(body):
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
