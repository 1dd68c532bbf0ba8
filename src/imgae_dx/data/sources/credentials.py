"""Kaggle credentials from the standard places, never from params.

Order (the one kagglehub uses; the kaggle CLI agrees on the token first):

1. an API token: ``KAGGLE_API_TOKEN`` (the token itself or a path to a file holding it),
   else ``~/.kaggle/access_token`` (kagglesdk's own lookup, so Kaggle notebooks work too);
2. a legacy API key: ``KAGGLE_USERNAME`` + ``KAGGLE_KEY``, else ``kaggle.json`` in
   ``$KAGGLE_CONFIG_DIR``, ``~/.kaggle`` or ``~/.config/kaggle``;
3. the OAuth credentials ``kaggle auth login`` writes, ``~/.kaggle/credentials.json`` (the
   order the kaggle command itself uses): kagglesdk's ``KaggleCredentials`` reads the file and
   turns its refresh token into a short-lived access token (``GenerateAccessToken``, saving it
   back to the file as the kaggle command does); when the API refuses that token in the middle
   of a long fetch, :meth:`KaggleCredentials.renewed` asks for a new one.

The secret never appears in a repr, a log line or an error message: :func:`find` registers it
(with the user name of a legacy key, for the ``user:key`` that HTTP basic auth encodes) with
:func:`imgae_dx.errors.register_secret`, which masks it in every form in everything the process
prints. kagglesdk's client sends a token as ``Authorization: Bearer <token>`` and a legacy key
as HTTP basic.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from imgae_dx.errors import UserError, register_secret

log = logging.getLogger(__name__)

#: Where credentials go, for the one-line errors; docs/real-data.md, "Credentials", has the table.
WHERE = (
    "put an API token in KAGGLE_API_TOKEN or ~/.kaggle/access_token, or a legacy key in "
    "KAGGLE_USERNAME + KAGGLE_KEY or ~/.kaggle/kaggle.json, or run `kaggle auth login`; never "
    'in params.yaml (docs/real-data.md, "Credentials")'
)
#: Where ``kaggle auth login`` keeps its OAuth credentials (kagglesdk's default).
OAUTH_FILE = "~/.kaggle/credentials.json"


class CredentialsError(UserError, RuntimeError):
    """Credentials are missing, malformed or were rejected; the message says where to put them."""


@dataclass(frozen=True)
class KaggleCredentials:
    """Where the credentials came from (safe to print) and the secret (never printed)."""

    source: str
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    key: str | None = field(default=None, repr=False)
    #: OAuth only: a function that returns a fresh access token (None: not renewable).
    renew: Callable[[], str] | None = field(default=None, repr=False, compare=False)

    @property
    def kind(self) -> str:
        if self.renew is not None:
            return "OAuth login"
        return "API token" if self.token else "legacy API key"

    def renewed(self) -> KaggleCredentials | None:
        """The same login with a fresh access token, or None if it cannot be renewed."""
        if self.renew is None:
            return None
        return replace(self, token=self.renew())

    def client_kwargs(self) -> dict[str, str | None]:
        """Keyword arguments for ``kagglesdk.KaggleClient``."""
        if self.token:
            return {"api_token": self.token}
        return {"username": self.username, "password": self.key}

    def describe(self) -> str:
        who = f" for user {self.username!r}" if self.username else ""
        return f"{self.kind}{who} from {self.source}"


def _legacy_files() -> list[Path]:
    out = []
    conf = os.environ.get("KAGGLE_CONFIG_DIR")
    if conf:
        out.append(Path(conf).expanduser() / "kaggle.json")
    home = Path(os.path.expanduser("~"))
    out.append(home / ".kaggle" / "kaggle.json")
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    out.append(Path(xdg) / "kaggle" / "kaggle.json")
    return out


def find(endpoint: str | None = None, *, exchange: bool = True) -> KaggleCredentials:
    """The first credentials found in the standard places; :class:`CredentialsError` if none.

    ``endpoint`` (``data.kaggle.endpoint``) is where an OAuth refresh token is exchanged for an
    access token; with ``exchange=False`` (the ``check`` stage) nothing is sent anywhere and an
    OAuth login comes back with the token it holds, possibly expired.
    """
    from kagglesdk.kaggle_env import get_access_token_from_env

    # kagglesdk sends it as Proxy-Authorization to Kaggle's staging hosts (KAGGLE_API_ENVIRONMENT).
    register_secret(os.environ.get("KAGGLE_IAP_TOKEN"))
    token, source = get_access_token_from_env()
    if token:
        token = token.strip()
        register_secret(token)
        where = {
            "KAGGLE_API_TOKEN": "KAGGLE_API_TOKEN",
            "access_token": "~/.kaggle/access_token",
        }.get(source or "", source or "the environment")
        return KaggleCredentials(source=where, token=token)

    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if user and key:
        register_secret(key.strip(), user=user.strip())
        return KaggleCredentials(
            source="KAGGLE_USERNAME/KAGGLE_KEY", username=user.strip(), key=key.strip()
        )
    if bool(user) != bool(key):
        missing = "KAGGLE_KEY" if user else "KAGGLE_USERNAME"
        log.warning("%s is not set, so KAGGLE_USERNAME/KAGGLE_KEY are ignored", missing)

    for path in _legacy_files():
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            user, key = str(data["username"]).strip(), str(data["key"]).strip()
        except (OSError, ValueError, KeyError, TypeError) as e:
            # Never echo the file's content: it is the secret.
            raise CredentialsError(
                f"{path}: not a valid Kaggle key file ({type(e).__name__}; JSON with 'username' "
                f"and 'key' expected): fix it, or {WHERE}"
            ) from None
        if not user or not key:
            raise CredentialsError(f"{path}: empty 'username' or 'key': fix it, or {WHERE}")
        register_secret(key, user=user)
        if os.name == "posix" and path.stat().st_mode & 0o077:
            log.warning("%s is readable by other users; chmod 600 it", path)
        return KaggleCredentials(source=str(path), username=user, key=key)

    oauth = _oauth(endpoint, exchange)
    if oauth is not None:
        return oauth
    raise CredentialsError(f"No Kaggle credentials found (data.source: kaggle needs them): {WHERE}")


def _oauth(endpoint: str | None, exchange: bool = True) -> KaggleCredentials | None:
    """The OAuth login ``kaggle auth login`` left in :data:`OAUTH_FILE`, with a valid access
    token (exchanged for its refresh token when missing or expired); None without the file."""
    from kagglesdk import KaggleCredentials as SdkCredentials

    from imgae_dx.data.sources.kaggle import client_for

    path = Path(os.path.expanduser(OAUTH_FILE))
    if not path.is_file():
        return None
    _register_oauth_secrets(path)
    sdk = SdkCredentials.load(client_for(endpoint), str(path))
    if sdk is None:  # never echo the file: it holds the secret
        raise CredentialsError(
            f"{path}: not a valid OAuth credentials file (JSON with a 'refresh_token' expected): "
            f"run `kaggle auth login` again, or {WHERE}"
        )

    def renew(force: bool = False) -> str:
        try:
            if force:
                sdk.refresh_access_token()
            token = sdk.get_access_token()
        except Exception as e:  # noqa: BLE001 - kagglesdk raises requests' errors and bare ones
            raise _refresh_refused(path, e) from None
        register_secret(token)
        return token

    token = renew() if exchange else None  # the check stage sends nothing
    user = sdk.get_username() or None
    return KaggleCredentials(
        source=f"{OAUTH_FILE} (kaggle auth login)",
        token=token,
        username=user,
        renew=lambda: renew(force=True),
    )


def _register_oauth_secrets(path: Path) -> None:
    """Mask the file's tokens before anything could print them."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(data, dict):
        for k in ("refresh_token", "access_token"):
            if isinstance(data.get(k), str) and data[k].strip():
                register_secret(data[k].strip())
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; chmod 600 it", path)


def _refresh_refused(path: Path, e: BaseException) -> CredentialsError:
    from imgae_dx.data.sources import http

    status = http.status_of(e)
    why = f"HTTP {status}" if status else type(e).__name__
    return CredentialsError(
        f"{path}: Kaggle refused to renew the OAuth login ({why}): it expired or was revoked; "
        f"run `kaggle auth login` again, or {WHERE}"
    )


def rejected(creds: KaggleCredentials, status: int, endpoint: str) -> CredentialsError:
    """The error for credentials the API refused."""
    return CredentialsError(
        f"Kaggle ({endpoint}) rejected the {creds.describe()} (HTTP {status}): it is wrong, "
        f"expired or revoked; create one at https://www.kaggle.com/settings (API) and {WHERE}"
    )
