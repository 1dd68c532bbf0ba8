"""The project's errors and how a command reports them: one line, secrets masked.

- :class:`UserError` is the base of every error a user can fix (bad params, a missing file,
  rejected credentials...). Its message is one line that names the file, row or key and says
  what to do; the subclasses also derive from the builtin they replace (``ValueError``...).
- :func:`register_secret` / :func:`redact`: the one redaction. A registered credential is
  masked in every form it travels in (as is, URL-encoded, JSON-escaped, ``user:key`` and the
  base64 of it that HTTP basic auth sends), and URLs lose their query string and user-info.
  Registering a secret installs the redaction of logs, warnings and tracebacks
  (:func:`install_redaction`), so a library caller is covered as well as a command.
- :func:`run` is what the stage scripts and the ``imgae-dx`` command run their ``main`` in: it
  turns every log record, warning and traceback of the process into redacted text, and a
  :class:`UserError` (or a failed file operation) into ``error: <message>`` on stderr and exit
  code 1. ``--debug`` on the command line or ``IMGAE_DX_DEBUG=1`` adds the (redacted) traceback.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from urllib.parse import quote, quote_plus

__all__ = ["UserError", "redact", "register_secret", "run"]

DEBUG_ENV = "IMGAE_DX_DEBUG"


class UserError(Exception):
    """An error the user can fix; the message is one line naming where and what to do."""


# ---- secrets -------------------------------------------------------------------------------------
_secrets: set[str] = set()
_lock = threading.Lock()
# A URL's query string, up to whitespace, a quote or bracket, or punctuation ending a clause
# (``:;,.`` followed by a space or the end), which stays.
_URL_QUERY_RE = re.compile(
    r"(\b[a-zA-Z][\w+.-]*://[^\s?#'\"<>]*)\?(?:[^\s'\"<>)\]:;,.]|[:;,.](?=[^\s]))*"
)
_USERINFO_RE = re.compile(r"(?<=://)[^/\s@]+@")


def _wire_forms(secret: str, user: str | None) -> set[str]:
    """Every form ``secret`` can travel in: what is sent (the token; HTTP basic's base64 of
    ``user:secret``, in UTF-8 and in the Latin-1 that requests encodes str with), the decoded
    ``user:secret``, and each of those URL-encoded or with JSON's optional ``\\/`` escapes."""
    sent = {secret}
    if user:
        pair = f"{user}:{secret}"
        sent.add(pair)
        for encoding in ("utf-8", "latin-1"):
            with contextlib.suppress(UnicodeEncodeError):
                sent.add(base64.b64encode(pair.encode(encoding)).decode())
    forms = set()
    for f in sent:
        forms |= {f, quote(f, safe=""), quote_plus(f), f.replace("/", "\\/")}
    return forms


def register_secret(secret: str | None, *, user: str | None = None) -> None:
    """Mask ``secret`` in everything :func:`redact` sees from now on, in every form it can take
    on the wire (:func:`_wire_forms`), and route the process's logs, warnings and uncaught
    tracebacks through :func:`redact` (:func:`install_redaction`): from the moment a credential
    is in the process, none of those can show it."""
    if not secret or len(secret) < 4:
        return
    with _lock:
        _secrets.update(f for f in _wire_forms(secret, user) if len(f) >= 4)
    install_redaction()


def redact(text: object, *, truncated: bool = False) -> str:
    """``text`` with registered secrets masked, URL query strings and user-info removed.

    ``truncated``: ``text`` is the start of something longer (the first kB of a body), so a
    secret cut off at its end is masked too.
    """
    s = str(text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        s = s.replace(secret, "***")
    if truncated:
        for secret in secrets:
            cut = next((n for n in range(len(secret) - 1, 2, -1) if s.endswith(secret[:n])), 0)
            if cut:
                s = s[:-cut] + "***"
    s = _USERINFO_RE.sub("", s)
    return _URL_QUERY_RE.sub(r"\1?…", s)


def _redacting_record_factory(factory: Callable[..., logging.LogRecord]):
    def make(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let logging report it as usual
            return record
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return record

    make.imgae_dx_redacting = True  # type: ignore[attr-defined]
    return make


def install_redaction() -> None:
    """Route every log record, warning and uncaught traceback of this process through
    :func:`redact` (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "imgae_dx_redacting", False):
        logging.setLogRecordFactory(_redacting_record_factory(factory))
    if not getattr(warnings.formatwarning, "imgae_dx_redacting", False):
        plain = warnings.formatwarning

        def formatwarning(message, category, filename, lineno, line=None) -> str:
            return redact(plain(message, category, filename, lineno, line))

        formatwarning.imgae_dx_redacting = True  # type: ignore[attr-defined]
        warnings.formatwarning = formatwarning

    if not getattr(sys.excepthook, "imgae_dx_redacting", False):

        def excepthook(kind, value, tb) -> None:
            sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))

        excepthook.imgae_dx_redacting = True  # type: ignore[attr-defined]
        sys.excepthook = excepthook


# ---- running a command ---------------------------------------------------------------------------
def one_line(e: BaseException, limit: int = 160) -> str:
    """``e``'s message on one line (library messages span lines), shortened to ``limit``."""
    s = " ".join(str(e).split()) or type(e).__name__
    return s if len(s) <= limit else s[: limit - 1] + "…"


def describe(exc: BaseException) -> str | None:
    """The one-line message of an error the user can act on, or None for a bug."""
    if isinstance(exc, UserError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None:
        what = exc.strerror or type(exc).__name__
        hint = {
            PermissionError: "check the permissions of that path",
            FileNotFoundError: "run the stage that writes it, or check the path",
            IsADirectoryError: "a file is expected there",
        }.get(type(exc), "check that path")
        return f"{exc.filename}: {what.lower()} ({hint})"
    return None


def run(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
    """Run ``main(argv)`` with redaction installed; a user error becomes one line on stderr.

    ``--debug`` (removed from ``argv`` before ``main`` sees it) or ``IMGAE_DX_DEBUG=1`` also
    prints the traceback. Returns the exit code.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    install_redaction()
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as exc:
        message = describe(exc)
        if message is None:
            raise  # a bug: the (redacted) traceback is what to report
        if debug:
            sys.stderr.write(redact("".join(traceback.format_exception(exc))))
        sys.stderr.write(f"error: {redact(message)}\n")
        return 1
