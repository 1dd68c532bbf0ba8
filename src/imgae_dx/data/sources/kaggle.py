"""``data.source: kaggle``: only the NIH images the split needs, from the Kaggle mirror.

The Kaggle dataset ``nih-chest-xrays/data`` is a single ~42 GB zip. The fetch

1. finds credentials in the standard places (:mod:`.credentials`) and talks to the Kaggle API
   through kagglesdk's own ``KaggleClient`` (the client ``kaggle`` 2.x and ``kagglehub`` 1.x are
   built on), unmodified; ``endpoint`` only replaces the base URL it posts to;
2. fetches the four metadata files, and calls ``select(raw_dir)`` to learn which images the
   split needs, before any image is transferred;
3. transfers those images only: ``DownloadDataset`` answers a redirect to the archive's signed
   download URL (taken from the SDK's public ``download_dataset``, closed after the headers),
   whose central directory is read from the end and whose needed members are fetched by HTTP
   Range (:mod:`.zipremote`; an expired URL, Cloud Storage's ``400 ExpiredToken`` among them,
   is replaced as often as it expires); for a handful of images (``method: auto``, at most
   ``files_max``), per-file downloads instead, falling back to the archive for files that
   answer 404 and for everything once Kaggle throttles single-file requests (429);
4. keeps every verified file in ``cache_dir`` (outside ``data/raw``, which DVC deletes before a
   rerun): files appear there only complete (temporary name, size + CRC-32 checked, rename),
   so an interrupted fetch resumes where it stopped and a rerun transfers nothing twice;
5. hard-links (or copies) the files into ``raw_dir`` in the Kaggle layout and writes
   ``raw_dir/fetch_manifest.json`` (path, size and CRC-32: what was fetched, never how, so that
   ``data/raw`` hashes the same whatever route the files took); the how goes to the cache's
   ``provenance.jsonl`` (per file) and ``fetches.jsonl`` (per run).

Kaggle credentials go to the Kaggle API host only; the download URLs it redirects to are
fetched without them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import posixpath
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests
from tqdm import tqdm

from imgae_dx.config import KaggleParams
from imgae_dx.data import nih
from imgae_dx.data.sources import credentials as creds_mod
from imgae_dx.data.sources import http
from imgae_dx.data.sources.files import (
    Linker,
    cache_lock,
    check_selection,
    file_crc32,
    fill_checksums,
    is_complete_png,
    remove_stale_parts,
    temp_name,
    write_manifest,
)
from imgae_dx.data.sources.zipremote import LOCAL_SIG, RemoteZip, ZipEntry
from imgae_dx.errors import UserError

log = logging.getLogger(__name__)

SERVICE = "datasets.DatasetApiService"
USER_AGENT = "imgae-dx (kagglesdk)"


class KaggleFetchError(UserError, RuntimeError):
    """The dataset cannot be fetched as asked; the message says why and what to change."""


class _DownloadHostError(http.HTTPStatusError):
    """The download host refused the URL the API redirected to: never a credentials problem;
    an expired or revoked signed URL (:func:`http.signed_url_expired`) is worth a fresh one."""

    @classmethod
    def of(cls, e: http.HTTPStatusError) -> _DownloadHostError:
        err = cls(e.status, e.url, retry_after=e.retry_after)
        err.args, err.detail = e.args, e.detail
        return err


class _FileMissing(Exception):
    """A single-file download answered 404 (some paths of this dataset do)."""


class _Throttled(Exception):
    """Kaggle throttles single-file downloads (429): switch to the archive."""


@contextlib.contextmanager
def _fall_back_on_404_429(rel: str) -> Iterator[None]:
    """A single-file request that answers 404 or 429 becomes :class:`_FileMissing` or
    :class:`_Throttled`: the file then comes from the archive."""
    try:
        yield
    except http.HTTPStatusError as e:
        if http.status_of(e) == 404:
            raise _FileMissing(rel) from None
        if http.status_of(e) == 429:
            raise _Throttled() from None
        raise


def client_for(endpoint: str | None = None, **credentials: Any) -> Any:
    """kagglesdk's ``KaggleClient`` for Kaggle's API (the environment ``KAGGLE_API_ENVIRONMENT``
    names, as for the SDK itself), or for ``endpoint`` (``data.kaggle.endpoint``: a mirror or
    a test server). The SDK takes its base URL only from a fixed table of Kaggle's own hosts,
    so an override sets the client's ``_endpoint``: the one private attribute touched, and only
    when an endpoint is given."""
    from kagglesdk.kaggle_client import KaggleClient
    from kagglesdk.kaggle_env import KaggleEnv

    if not endpoint:
        return KaggleClient(verbose=False, user_agent=USER_AGENT, **credentials)
    client = KaggleClient(env=KaggleEnv.LOCAL, verbose=False, user_agent=USER_AGENT, **credentials)
    client.http_client()._endpoint = endpoint.rstrip("/")
    return client


# -- the API, through kagglesdk --------------------------------------------------------------------
class KaggleApi:
    """``ListDatasetFiles`` / ``DownloadDataset`` through kagglesdk's ``KaggleClient``.

    ``dataset`` is ``<owner>/<slug>`` (the schema checks the form). The SDK builds the requests
    (URL, JSON body, auth header); ``endpoint`` replaces the base URL (requests go to
    ``<endpoint>/api/v1/datasets.DatasetApiService/<Method>``, like the SDK's non-production
    environments). Calls are serialized: they are cheap, and rate limits apply to the account,
    not to the connection.
    """

    def __init__(
        self,
        dataset: str,
        *,
        creds: creds_mod.KaggleCredentials,
        policy: http.RetryPolicy,
        endpoint: str | None = None,
        version: int | None = None,
    ):
        from kagglesdk.kaggle_env import get_endpoint, get_env

        self.owner, self.slug = dataset.split("/")
        self.version = version
        self.creds, self.policy = creds, policy
        kwargs = creds.client_kwargs()
        self._endpoint_override = endpoint
        self.client = client_for(endpoint, **kwargs)
        self.endpoint = http.public_url(endpoint or get_endpoint(get_env()))
        self._lock = threading.Lock()
        self._renew_lock = threading.Lock()
        self.calls = 0

    @property
    def label(self) -> str:
        v = f" v{self.version}" if self.version else ""
        return f"{self.owner}/{self.slug}{v}"

    def _call(
        self,
        fn: Callable[[], Any],
        what: str,
        *,
        throttle_fails: bool = False,
        renewed: bool = False,
    ) -> Any:
        def attempt() -> Any:
            with self._lock:
                self.calls += 1
                try:
                    return fn()
                except requests.HTTPError as e:  # kagglesdk's: its text is the server's message
                    error = http.status_error(e)
            raise error  # out of the except block: the raw original is not kept as its context

        def retryable(e: BaseException) -> bool:
            if throttle_fails and http.status_of(e) == 429:
                return False
            if isinstance(e, _DownloadHostError) and http.signed_url_expired(e):
                return True  # the next attempt gets a freshly signed URL
            return http.is_retryable(e)

        used = self.creds
        try:
            return http.call(attempt, self.policy, what, retryable=retryable)
        except http.HTTPStatusError as e:
            if e.status not in (401, 403) or isinstance(e, _DownloadHostError):
                raise
            if e.status == 401 and not renewed and self._renew(used):
                return self._call(fn, what, throttle_fails=throttle_fails, renewed=True)
            raise creds_mod.rejected(self.creds, e.status, self.endpoint) from None

    def _renew(self, used: creds_mod.KaggleCredentials) -> bool:
        """A fresh access token for an OAuth login whose token the API refused (it expires
        after hours; a fetch of the whole archive can last longer); False if not renewable."""
        with self._renew_lock:
            if self.creds is not used:
                return True  # another worker renewed it meanwhile
            fresh = self.creds.renewed()
            if fresh is None:
                return False
            log.info("kaggle: the access token expired; renewed it from the OAuth login")
            self.creds = fresh
            self.client = client_for(self._endpoint_override, **fresh.client_kwargs())
            return True

    def _refused(self, what: str, e: http.HTTPStatusError) -> KaggleFetchError:
        """The error for a call the API refused for good (not credentials, not throttling)."""
        if e.status == 404:
            return KaggleFetchError(
                f"data.kaggle.dataset: {self.label} not found at {self.endpoint}"
            )
        return KaggleFetchError(f"{what}: {e} (check data.kaggle: dataset, version, endpoint)")

    def list_files(self, page_size: int = 20) -> list[tuple[str, int]]:
        """First page of the dataset's files: checks that the dataset exists and the credentials work."""
        from kagglesdk.datasets.types.dataset_api_service import ApiListDatasetFilesRequest

        req = ApiListDatasetFilesRequest()
        req.owner_slug, req.dataset_slug, req.page_size = self.owner, self.slug, page_size
        if self.version:
            req.dataset_version_number = self.version
        what = f"list the files of {self.label}"
        try:
            resp = self._call(
                lambda: self.client.datasets.dataset_api_client.list_dataset_files(req), what
            )
        except http.HTTPStatusError as e:
            raise self._refused(what, e) from None
        if resp.error_message:
            log.warning("Kaggle says about %s: %s", self.label, http.redact(resp.error_message))
        return [(f.name, int(f.total_bytes or 0)) for f in resp.dataset_files]

    def download_url(self) -> str:
        """The signed URL of the whole archive (:class:`KaggleFetchError` if refused).

        The download host's response is closed after its headers: none of the archive's body
        is read (the kernel may have buffered up to a TCP window of it; the fetch then reads
        only byte ranges of that URL).
        """
        with self.open_download(None) as resp:
            return resp.url

    def open_download(
        self, file_name: str | None = None, *, throttle_fails: bool = False
    ) -> requests.Response:
        """The download host's streaming response for the archive or one file, unread.

        ``DownloadDataset`` answers a redirect to a signed URL; kagglesdk's public
        ``download_dataset`` follows it and (since kagglesdk 0.1.14) returns that response
        streaming, so its ``url`` is the signed URL and its body the file. requests drops the
        ``Authorization`` header when a redirect leaves the API host, so the download host never
        sees the credentials. For one file an error status is raised as
        :class:`http.HTTPStatusError` (the caller falls back to the archive); for the archive,
        as :class:`KaggleFetchError`. The caller closes the response.
        """
        from kagglesdk.datasets.types.dataset_api_service import ApiDownloadDatasetRequest

        req = ApiDownloadDatasetRequest()
        req.owner_slug, req.dataset_slug = self.owner, self.slug
        if self.version:
            req.dataset_version_number = self.version
        if file_name:
            req.file_name = file_name
        what = f"download link of {self.label}" + (f"/{file_name}" if file_name else "")
        try:
            return self._call(lambda: self._download(req), what, throttle_fails=throttle_fails)
        except http.HTTPStatusError as e:
            if file_name:
                raise
            raise self._refused(what, e) from None

    def _download(self, request: Any) -> requests.Response:
        api = self.client.datasets.dataset_api_client
        try:
            resp = api.download_dataset(request)
        except requests.HTTPError as e:
            if e.response is None or not e.response.history:
                raise  # the API's own answer: ``_call`` makes it one line
            e.response.close()
            error = _DownloadHostError.of(http.status_error(e))
        else:
            if resp.history:  # redirected: the download host's answer
                return resp
            return self._follow_json_url(resp)
        raise error  # out of the except block: the original (with the request) is not kept

    def _follow_json_url(self, resp: requests.Response) -> requests.Response:
        """A mirror that answers ``{"url": ...}`` instead of a redirect: that URL, opened
        without the credentials."""
        with resp:
            url = None
            if "json" in resp.headers.get("Content-Type", ""):
                url = (resp.json() or {}).get("url")
            if not url:
                raise KaggleFetchError(
                    f"{self.endpoint}: DownloadDataset answered {resp.status_code} without a "
                    "redirect to the file"
                )
            url = urljoin(resp.url, url)
        target = http.new_session(1).get(url, stream=True, timeout=self.policy.timeouts)
        try:
            http.raise_for_status(target, url)
        except http.HTTPStatusError as e:
            raise _DownloadHostError.of(e) from None
        return target


# -- helpers ---------------------------------------------------------------------------------------
def _goog_md5(headers: Any) -> str | None:
    """The base64 MD5 from Google Cloud Storage's ``x-goog-hash`` header, if any."""
    for part in (headers.get("x-goog-hash") or "").split(","):
        k, _, v = part.strip().partition("=")
        if k == "md5" and v:
            return v
    return None


class _Provenance:
    """Where each cached file came from (so a rerun's manifest can say), one JSON line per file."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self.known: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                    self.known[rec["path"]] = rec
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill

    def add(self, rec: dict[str, Any]) -> None:
        with self._lock:
            self.known[rec["path"]] = rec
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")


# -- the fetch -------------------------------------------------------------------------------------
class _Fetcher:
    def __init__(self, api: KaggleApi, cache_root: Path, policy: http.RetryPolicy, workers: int):
        self.api, self.policy, self.workers = api, policy, workers
        self.cache_root = cache_root
        self.files_dir = cache_root / "files"
        self.zip: RemoteZip | None = None
        self._by_name: dict[str, ZipEntry] = {}
        self._by_base: dict[str, ZipEntry] = {}
        self.rows: dict[str, dict[str, Any]] = {}
        self.provenance = _Provenance(cache_root / "provenance.jsonl")
        self._lock = threading.Lock()
        self.file_bytes = 0
        self.file_requests = 0
        self.throttled = False
        self.modes: set[str] = set()

    def cache_path(self, rel: str) -> Path:
        return self.files_dir / rel

    # rows ----------------------------------------------------------------------------------------
    def _record(
        self,
        rel: str,
        *,
        source: str,
        member: str | None,
        size: int | None,
        crc: int | None,
        transferred: bool,
    ) -> None:
        row = {
            "path": rel,
            "source": source,
            "member": member,
            "size": size,
            "crc32": f"{crc:08x}" if crc is not None else None,
            "transferred": transferred,
        }
        with self._lock:
            self.rows[rel] = row
        if transferred:
            self.provenance.add(
                {
                    "path": rel,
                    "source": source,
                    "member": member,
                    "size": size,
                    "crc32": row["crc32"],
                }
            )

    def record_cached(self, rel: str, entry: ZipEntry | None = None) -> None:
        if entry is not None and self.zip is not None:
            self._record(
                rel,
                source=self.zip.public_url,
                member=entry.name,
                size=entry.size,
                crc=entry.crc32,
                transferred=False,
            )
            return
        prov = self.provenance.known.get(rel, {})
        self._record(
            rel,
            source=prov.get("source") or f"kaggle:{self.api.label}/{rel}",
            member=prov.get("member"),
            size=None,
            crc=None,
            transferred=False,
        )

    # the archive ---------------------------------------------------------------------------------
    def remote_zip(self) -> RemoteZip:
        if self.zip is None:
            z = RemoteZip(
                lambda refresh: self.api.download_url(),
                policy=self.policy,
                cache_dir=self.cache_root / "zip",
                workers=self.workers,
            )
            entries = z.read_directory()
            self._by_name = {e.name: e for e in entries if not e.is_dir}
            bases: dict[str, list[ZipEntry]] = {}
            for e in self._by_name.values():
                bases.setdefault(posixpath.basename(e.name), []).append(e)
            self._by_base = {b: min(es, key=lambda x: len(x.name)) for b, es in bases.items()}
            self.zip = z
        return self.zip

    def entry_for(self, rel: str) -> ZipEntry | None:
        return self._by_name.get(rel) or self._by_base.get(posixpath.basename(rel))

    def from_zip(
        self, rels: list[str], *, optional: frozenset[str] = frozenset(), bar: tqdm | None = None
    ) -> None:
        """Bring ``rels`` into the cache from the archive (verifying what is cached already)."""
        z = self.remote_zip()
        self.modes.add("zip")
        todo: dict[str, ZipEntry] = {}
        absent = []
        for rel in rels:
            e = self.entry_for(rel)
            if e is None:
                absent.append(rel)
                continue
            if z.verify(self.cache_path(rel), e):
                self.record_cached(rel, e)
                if bar is not None:
                    bar.update(1)
            else:
                todo[e.name] = e
        required = [r for r in absent if r not in optional]
        for r in absent:
            if r in optional:
                log.warning("%s: no %s in the archive; going on without it", self.api.label, r)
        if required:
            raise KaggleFetchError(
                f"{len(required)} needed file(s) are not in the archive of {self.api.label} "
                f"(e.g. {', '.join(required[:3])})"
            )
        rel_of = {self.entry_for(r).name: r for r in rels if r not in absent}

        def done(e: ZipEntry, nbytes: int) -> None:
            rel = rel_of[e.name]
            self._record(
                rel, source=z.public_url, member=e.name, size=e.size, crc=e.crc32, transferred=True
            )
            if bar is not None:
                bar.update(1)

        if todo:
            log.info("fetching %d member(s) of %s by range", len(todo), z.public_url)
            z.fetch(todo.values(), lambda e: self.cache_path(rel_of[e.name]), on_done=done)

    # single files --------------------------------------------------------------------------------
    def fetch_file(self, rel: str) -> None:
        """One file through its own download link; :class:`_FileMissing` / :class:`_Throttled` to fall back."""
        dest = self.cache_path(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        expect = self.entry_for(rel) if self.zip is not None else None

        def attempt() -> tuple[str, int, int]:
            if self.throttled:
                raise _Throttled()
            with _fall_back_on_404_429(rel):
                resp = self.api.open_download(rel, throttle_fails=True)
            tmp = temp_name(dest)
            try:
                with resp:
                    self._save_body(resp, tmp, rel)
                size, crc = self._check_download(tmp, rel, expect)
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
            return resp.url, size, crc

        def retryable(e: BaseException) -> bool:
            return http.is_retryable(e) and http.status_of(e) != 429

        url, size, crc = http.call(attempt, self.policy, f"download {rel}", retryable=retryable)
        self.modes.add("files")
        self._record(
            rel, source=http.public_url(url), member=None, size=size, crc=crc, transferred=True
        )

    def _save_body(self, resp: requests.Response, tmp: Path, rel: str) -> None:
        """The body of ``resp`` into ``tmp``, checked against Content-Length and x-goog-hash."""
        with self._lock:
            self.file_requests += 1
        n = 0
        md5 = hashlib.md5()
        try:
            with open(tmp, "wb") as fh:
                for chunk in http.iter_body(resp):
                    fh.write(chunk)
                    md5.update(chunk)
                    n += len(chunk)
        finally:
            with self._lock:
                self.file_bytes += n
        length = resp.headers.get("Content-Length")
        if length is not None and int(length) != n:
            raise http.TransferError(f"{rel}: got {n} of {length} bytes")
        want_md5 = _goog_md5(resp.headers)
        if want_md5 and base64.b64encode(md5.digest()).decode() != want_md5:
            raise http.TransferError(f"{rel}: MD5 differs from the server's x-goog-hash")

    def _check_download(self, tmp: Path, rel: str, expect: ZipEntry | None) -> tuple[int, int]:
        """Unwrap a zipped download, check it against the archive directory (when at hand) and
        the PNG format; ``(size, crc32)``."""
        self._unwrap(tmp, rel)
        size, crc = file_crc32(tmp)
        if expect is not None and (size != expect.size or crc != expect.crc32):
            raise http.TransferError(f"{rel}: size/CRC differ from the archive directory")
        if rel.endswith(".png") and not is_complete_png(tmp):
            raise http.TransferError(
                f"{tmp.name}: not a complete PNG (signature or IEND chunk missing)"
            )
        return size, crc

    @staticmethod
    def _unwrap(tmp: Path, rel: str) -> None:
        """Kaggle serves some single files zipped (``<name>.zip``): keep the file itself."""
        if rel.endswith(".zip"):
            return
        with open(tmp, "rb") as fh:
            if fh.read(4) != LOCAL_SIG:
                return
        base = posixpath.basename(rel)
        try:
            with zipfile.ZipFile(tmp) as zf:
                infos = [i for i in zf.infolist() if not i.is_dir()]
                info = next((i for i in infos if posixpath.basename(i.filename) == base), None)
                if info is None and len(infos) == 1:
                    info = infos[0]
                if info is None:
                    raise http.TransferError(f"{rel}: the download is a zip without {base}")
                out = tmp.with_name(tmp.name + ".x")
                try:
                    with zf.open(info) as src, open(out, "wb") as dst:  # zipfile checks the CRC
                        while b := src.read(1 << 20):
                            dst.write(b)
                    os.replace(out, tmp)
                finally:
                    out.unlink(missing_ok=True)
        except (zipfile.BadZipFile, OSError) as e:
            raise http.TransferError(f"{rel}: bad zipped download ({e})") from e

    def files_with_fallback(
        self, rels: list[str], *, optional: frozenset[str] = frozenset(), bar: tqdm | None = None
    ) -> None:
        """Per-file downloads; what answers 404 or is throttled comes from the archive."""
        fallback: list[str] = []

        def one(rel: str) -> str | None:
            try:
                self.fetch_file(rel)
            except _FileMissing:
                log.info("%s: no single-file download (404); taking it from the archive", rel)
                return rel
            except _Throttled:
                if not self.throttled:
                    log.warning(
                        "Kaggle throttles single-file downloads (429); switching to the archive"
                    )
                self.throttled = True
                return rel
            except (http.RetriesExhausted, http.TransferError, http.HTTPStatusError) as e:
                log.warning(
                    "%s: single-file download failed (%s); taking it from the archive",
                    rel,
                    http.redact(e),
                )
                return rel
            if bar is not None:
                bar.update(1)
            return None

        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(rels) or 1))) as pool:
            futures = [pool.submit(one, r) for r in rels]
            for f in as_completed(futures):
                r = f.result()
                if r is not None:
                    fallback.append(r)
        if fallback:
            self.from_zip(sorted(fallback), optional=optional, bar=bar)


def _fetch_metadata(f: _Fetcher, method: str, raw_dir: Path, linker: Linker) -> None:
    """The metadata first, into the cache and ``raw_dir``: the selection is decided from it."""
    meta = list(nih.METADATA_FILES)
    optional = frozenset(meta) - {nih.DATA_ENTRY}
    if method == "zip":
        f.from_zip(meta, optional=optional)
    else:
        cached = [r for r in meta if f.cache_path(r).is_file()]
        for r in cached:
            f.record_cached(r)
        f.files_with_fallback([r for r in meta if r not in cached], optional=optional)
    for r in meta:
        if r in f.rows:  # an optional file the dataset lacks has no row
            linker.place(f.cache_path(r), raw_dir / r)


def _plan_images(
    f: _Fetcher, names: list[str], params: KaggleParams
) -> tuple[list[str], list[str], bool]:
    """The selected images' paths, those not in the cache, and whether to fetch them one by one."""
    rels = [nih.image_relpath(n) for n in names]
    missing = [r for r in rels if not f.cache_path(r).is_file()]
    per_file = params.method == "files" or (
        params.method == "auto" and len(missing) <= params.files_max
    )
    log.info(
        "kaggle: %d image(s) selected, %d not in the cache; fetching %s",
        len(rels),
        len(missing),
        "one by one" if per_file and missing else "by range from the archive",
    )
    return rels, missing, per_file


def _fetch_images(f: _Fetcher, rels: list[str], missing: list[str], per_file: bool) -> None:
    """The images into the cache: one by one (``missing`` only), or by range from the archive."""
    with tqdm(total=len(rels), desc="kaggle", unit="img", disable=None, leave=False) as bar:
        if not per_file:
            f.from_zip(rels, bar=bar)
            return
        if f.zip is not None:  # the directory is at hand: verify the cache against it
            f.from_zip([r for r in rels if r not in missing], bar=bar)
        else:
            for r in rels:
                if r not in missing:
                    f.record_cached(r)
                    bar.update(1)
        f.files_with_fallback(missing, bar=bar)


def _into_raw_dir(f: _Fetcher, rels: list[str], raw_dir: Path, linker: Linker) -> None:
    """The images from the cache into ``raw_dir``; sizes and CRCs the manifest still lacks."""
    for r in rels:
        linker.place(f.cache_path(r), raw_dir / r)
    fill_checksums(list(f.rows.values()), raw_dir)


def _summary(
    f: _Fetcher, raw_dir: Path, version: int | None, rels: list[str], t0: float
) -> dict[str, Any]:
    """Write the manifest (what was fetched) and append the run's summary (how) to the cache's
    ``fetches.jsonl``; the summary."""
    z, api = f.zip, f.api
    header = {
        "source": "kaggle",
        "dataset": f"{api.owner}/{api.slug}",
        "version": version,
        "n_images": len(rels),
    }
    rows = [f.rows[r] for r in list(nih.METADATA_FILES) + rels if r in f.rows]
    manifest = write_manifest(raw_dir, header, rows)
    transferred = [r for r in rows if r["transferred"]]
    summary = {
        **header,
        "endpoint": api.endpoint,
        "method": "+".join(sorted(f.modes)) or "cache",
        "archive": (
            {"url": z.public_url, "size": z.location.archive_size, "entries": len(z.entries)}
            if z is not None and z.location is not None
            else None
        ),
        "n_transferred": len(transferred),
        "n_from_cache": len(rows) - len(transferred),
        "bytes_images": sum(int(r["size"]) for r in rows if r["path"].endswith(".png")),
        "bytes_transferred": (z.stats.bytes if z else 0) + f.file_bytes,
        "http_requests": (z.stats.requests if z else 0) + f.file_requests + api.calls,
        "url_refreshes": z.refreshes if z else 0,
        "retries": f.policy.retries,
        "seconds": round(time.monotonic() - t0, 3),
        "manifest": str(manifest),
    }
    with open(f.cache_root / "fetches.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **summary}) + "\n")
    log.info(
        "kaggle: %d image(s) in %s: %d transferred, %d from the cache, %.1f MB over the network in %.1f s",
        len(rels),
        raw_dir,
        summary["n_transferred"],
        summary["n_from_cache"],
        summary["bytes_transferred"] / 1e6,
        summary["seconds"],
    )
    return summary


def fetch(
    raw_dir: Path,
    params: KaggleParams,
    *,
    select: Callable[[Path], list[str]],
    cache_dir: Path,
) -> dict[str, Any]:
    """Fill ``raw_dir`` with the NIH metadata and the images ``select(raw_dir)`` names.

    ``params`` is the ``data.kaggle`` block; ``cache_dir`` (given by the pipeline) keeps
    verified downloads between runs. The steps are those of the module docstring.
    """
    t0 = time.monotonic()
    raw_dir, version = Path(raw_dir), params.version
    policy = http.RetryPolicy(
        max_retries=params.max_retries, max_backoff=params.max_backoff, timeout=params.timeout
    )
    creds = creds_mod.find(params.endpoint)  # before any request: a missing token stops here
    api = KaggleApi(
        params.dataset, creds=creds, policy=policy, endpoint=params.endpoint, version=version
    )
    log.info("kaggle: %s at %s with the %s", api.label, api.endpoint, creds.describe())
    cache_root = Path(cache_dir) / api.owner / api.slug / (f"v{version}" if version else "latest")
    raw_dir.mkdir(parents=True, exist_ok=True)

    with cache_lock(cache_root / ".lock"):
        stale = remove_stale_parts(cache_root)
        if stale:
            log.info("removed %d temporary file(s) left by an interrupted fetch", stale)
        api.list_files()
        f = _Fetcher(api, cache_root, policy, params.workers)
        linker = Linker("auto")
        _fetch_metadata(f, params.method, raw_dir, linker)
        names = check_selection(select(raw_dir))
        rels, missing, per_file = _plan_images(f, names, params)
        _fetch_images(f, rels, missing, per_file)
        _into_raw_dir(f, rels, raw_dir, linker)
    return _summary(f, raw_dir, version, rels, t0)
