"""The one Label Studio API client: authentication, one retry policy, typed errors.

Used by the image fetcher (auth headers for LS-hosted images), the predictor (a task's boxes
when LS did not send them) and the bulk runner (projects, task pages, predictions).

* Keys: a JWT-shaped key is a personal access token, exchanged at ``/api/token/refresh/`` for a
  short-lived ``Bearer`` access token (refreshed 30 s before it expires, and once more on a 401);
  anything else is a legacy ``Token``. The access tokens are registered as secrets
  (:mod:`backend.redaction`) so that no log line shows them.
* Retries (:data:`RETRIES`): a connection error, a timeout or HTTP 502/503/504 is retried twice,
  0.5 s then 1 s later; nothing else is (a 4xx will not get better, and a POST that reached LS
  must not be sent twice because of a 500).
* Errors are :class:`LabelStudioError` with ``status`` (the HTTP status, ``None`` if LS was not
  reached) and ``fatal`` (the caller cannot go on: LS unreachable or the key refused).

Plain ``requests`` on one Session rather than label-studio-sdk's client: the SDK (2.1.2) wraps
httpx with its own retry and timeout policy, raises its own ``ApiError`` types, always sends
its PAT refresh on construction and resolves task URIs on list calls unless told otherwise;
with it, the requests LS sees (``fields=all&resolve_uri=false`` pages, no proxy from the
environment, one timeout per call) and the errors we report would change.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from .redaction import log_safe, redact, register_secret


class LabelStudioError(Exception):
    """A call to Label Studio failed; ``status`` is the HTTP status (None: LS not reached)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def fatal(self) -> bool:
        """Nothing more can be done with this LS (unreachable, or the key refused), as opposed to
        one request or task that failed."""
        return self.status is None or self.status in (401, 403)


class LabelStudioUnreachable(LabelStudioError):
    """No answer from LS: connection refused or reset, DNS failure, timeout (after the retries)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, None)


class LabelStudioAuthError(LabelStudioError):
    """LS refused the key: HTTP 401/403, or the personal access token could not be refreshed."""

    @property
    def fatal(self) -> bool:
        return True


class LabelStudioRedirected(LabelStudioAuthError):
    """LS answered with a redirect to another origin: not followed, since the key would go with it."""


class LabelStudioNotConfigured(LabelStudioError):
    """``LABEL_STUDIO_URL`` is not set."""

    @property
    def fatal(self) -> bool:
        return True


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried, how often and how long to wait before attempt ``n`` (1-based)."""

    retries: int = 2
    backoff: float = 0.5
    statuses: frozenset[int] = frozenset({502, 503, 504})

    def delay(self, attempt: int) -> float:
        return self.backoff * attempt


RETRIES = RetryPolicy()
_REDIRECTS = (301, 302, 303, 307, 308)


def url_origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL: what must match for a request to be Label Studio's own."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port


def looks_like_jwt(token: str) -> bool:
    """A personal access token is a JWT (header.payload.signature, JSON header with 'alg')."""
    parts = token.split(".")
    if len(parts) != 3 or not all(re.fullmatch(r"[A-Za-z0-9_\-]+", p) for p in parts):
        return False
    header = _b64json(parts[0])
    return isinstance(header, dict) and "alg" in header


def _b64json(seg: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


class LabelStudioClient:
    """Authenticated JSON access to one Label Studio (see module docstring)."""

    def __init__(
        self, url: str, api_key: str, timeout: float = 30.0, session: requests.Session | None = None, retry: RetryPolicy = RETRIES
    ) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retry = retry
        self.session = session or requests.Session()
        self.session.trust_env = False  # no proxies from the environment for LS calls
        self._access: str | None = None
        self._access_exp = 0.0
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self.url)

    @property
    def is_pat(self) -> bool:
        return looks_like_jwt(self.api_key)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.api_key, self._access) if s)

    # -- authentication -------------------------------------------------------------------------
    def auth_headers(self, force_refresh: bool = False) -> dict[str, str]:
        if not self.api_key:
            return {}
        if not self.is_pat:
            return {"Authorization": f"Token {self.api_key}"}
        with self._lock:
            if force_refresh or self._access is None or time.time() > self._access_exp - 30:
                self._refresh()
            return {"Authorization": f"Bearer {self._access}"}

    def _refresh(self) -> None:
        try:
            # no redirects: a 307/308 would re-send the refresh token in the body to wherever it points
            r = self.session.post(
                f"{self.url}/api/token/refresh/", json={"refresh": self.api_key}, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            raise LabelStudioUnreachable(
                f"cannot refresh the personal access token at {self.url}: {type(exc).__name__}"
            ) from None
        # a failed refresh means the key was refused: status 401 whatever the refresh answered
        # (that status is in the message), as for a refused legacy token
        if r.status_code != 200:
            raise LabelStudioAuthError(
                f"personal access token refresh failed: HTTP {r.status_code} from {self.url}/api/token/refresh/", 401
            )
        try:
            access = (r.json() or {}).get("access")
        except ValueError:
            access = None
        if not isinstance(access, str) or not access:
            raise LabelStudioAuthError("personal access token refresh returned no access token", 401)
        payload = _b64json(access.split(".")[1]) if access.count(".") == 2 else None
        exp = payload.get("exp") if isinstance(payload, dict) else None
        register_secret(access)
        self._access = access
        self._access_exp = float(exp) if isinstance(exp, (int, float)) else time.time() + 240

    # -- requests -------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        ok: Iterable[int] = (200, 201, 204),
    ) -> Any:
        """``method path`` with the key; the JSON answer (None if empty). Retries per ``self.retry``;
        a PAT's access token is refreshed once on a 401."""
        if not self.configured:
            raise LabelStudioNotConfigured("LABEL_STUDIO_URL is not set: cannot read from Label Studio's API")
        ok = tuple(ok)
        refreshed = False
        attempt = 0
        while True:
            headers = self.auth_headers(force_refresh=refreshed)
            try:
                r = self._request_on_ls(method, path, params, body, headers)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt < self.retry.retries:
                    attempt += 1
                    time.sleep(self.retry.delay(attempt))
                    continue
                raise LabelStudioUnreachable(
                    f"cannot reach Label Studio at {self.url} ({method} {path}: {type(exc).__name__})"
                ) from None
            except requests.RequestException as exc:
                raise LabelStudioError(f"{method} {path} on Label Studio failed: {type(exc).__name__}") from None
            if r.status_code == 401 and self.is_pat and not refreshed:
                refreshed = True
                continue
            if r.status_code in self.retry.statuses and attempt < self.retry.retries:
                attempt += 1
                time.sleep(self.retry.delay(attempt))
                continue
            if r.status_code not in ok:
                detail = redact(r.text[:300].strip().replace("\n", " "), self.secrets)
                kind = LabelStudioAuthError if r.status_code in (401, 403) else LabelStudioError
                raise kind(f"{method} {path} on Label Studio: HTTP {r.status_code} {detail}".rstrip(), r.status_code)
            if not r.content:
                return None
            try:
                return r.json()
            except ValueError:
                raise LabelStudioError(f"{method} {path} on Label Studio: the answer is not JSON", r.status_code) from None

    def _request_on_ls(
        self, method: str, path: str, params: Mapping[str, Any] | None, body: Any, headers: dict[str, str]
    ) -> requests.Response:
        """One request with redirects followed by hand: every hop must stay on Label Studio's own
        scheme, host and port, so the key is never forwarded elsewhere (in clear text, or to a
        third host). requests would follow them itself, keeping the header on same-host hops."""
        url = f"{self.url}{path}"
        for _hop in range(6):
            r = self.session.request(
                method, url, params=params, json=body, headers=headers, timeout=self.timeout, allow_redirects=False
            )
            if r.status_code not in _REDIRECTS:
                return r
            r.close()
            url, params = urljoin(r.url, r.headers.get("Location", "")), None  # the Location carries its own query
            if url_origin(url) != url_origin(self.url):
                raise LabelStudioRedirected(
                    f"{method} {path} on Label Studio redirected off Label Studio ({log_safe(url)}): refused, key not sent",
                    r.status_code,
                )
            if r.status_code == 303:
                method, body = "GET", None
        raise LabelStudioError(f"{method} {path} on Label Studio: too many redirects", None)

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params, ok=(200,))

    # -- the calls camcut makes -----------------------------------------------------------------
    def project(self, project: int) -> Any:
        return self.request("GET", f"/api/projects/{project}/")

    def task_with_results(self, task_id: int) -> dict[str, Any] | None:
        """The task with its annotations and predictions (LS 1.23 leaves predictions out of
        ``/api/tasks/{id}`` unless asked: then read from ``/api/predictions/?task=``)."""
        full = self.get_json(f"/api/tasks/{task_id}")
        if not isinstance(full, dict):
            return None
        if "predictions" not in full:
            preds = self.get_json("/api/predictions/", {"task": task_id})
            full["predictions"] = preds if isinstance(preds, list) else (preds or {}).get("results", [])
        return full

    def tasks(self, project: int, page_size: int = 100) -> list[dict[str, Any]]:
        """All tasks of the project with annotations and predictions, data as stored (LS 1.23
        answers ``{"tasks": [...], "total": N}`` per page and 404 past the last page)."""
        out: dict[int, dict[str, Any]] = {}
        page = 1
        while True:
            res = self.request(
                "GET",
                "/api/tasks/",
                ok=(200, 404),
                params={"project": project, "page": page, "page_size": page_size, "fields": "all", "resolve_uri": "false"},
            )
            items = res.get("tasks") if isinstance(res, dict) else res if isinstance(res, list) else None
            if not items:
                break
            for t in items:
                if isinstance(t, dict) and isinstance(t.get("id"), int):
                    out.setdefault(t["id"], t)
            total = res.get("total") if isinstance(res, dict) else None
            if isinstance(res, list) or len(items) < page_size or (isinstance(total, int) and len(out) >= total):
                break
            page += 1
        return [out[k] for k in sorted(out)]

    def post_prediction(self, task: int, result: list[Any], score: float | None, model_version: str) -> dict[str, Any]:
        body = {"task": task, "result": result, "score": score, "model_version": model_version}
        res = self.request("POST", "/api/predictions/", body=body, ok=(200, 201))
        return res if isinstance(res, dict) else {}

    def delete_prediction(self, prediction: int) -> None:
        self.request("DELETE", f"/api/predictions/{prediction}/", ok=(200, 204, 404))
