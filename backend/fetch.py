"""Fetching task images the way Label Studio serves them, safely; talking to LS's API.

* ``/data/upload/...``, ``/data/local-files/?d=...``, ``/tasks/{id}/presign/?fileuri=...``
  (any path starting with ``/``) are prefixed with ``LABEL_STUDIO_URL``.
* ``s3://``, ``gs://``, ``azure-blob://`` URIs are presigned through LS:
  ``/tasks/{id}/presign/?fileuri=<urlsafe base64 of the URI>`` (LS redirects or proxies).
* ``http(s)://`` URLs are fetched if their host is LS's host or allow-listed.

Every hop (redirects included, followed by hand) is checked: scheme http/https, no userinfo,
no ``..`` path segment, host allowed; hosts allowed only through a wildcard must resolve to
global addresses. The API key goes only to LS's own host. Downloads are streamed with a byte
cap and a wall-clock deadline.

Talking to LS's API is :mod:`backend.labelstudio`; redaction is :mod:`backend.redaction` (both
re-exported here for the callers that imported them from this module).
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import re
import socket
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

import requests

from .config import Settings
from .labelstudio import LabelStudioClient, looks_like_jwt
from .redaction import RedactingFilter, redact

log = logging.getLogger("backend.fetch")

__all__ = ["CLOUD_SCHEMES", "FetchError", "Fetched", "ImageFetcher", "LabelStudioClient", "RedactingFilter", "UnsafeUrlError",
           "UrlPolicy", "looks_like_jwt", "redact", "system_resolver"]

CLOUD_SCHEMES = ("s3", "gs", "gcs", "azure-blob", "azure")
_REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(ValueError):
    """The image could not be obtained (missing, HTTP error, too big, too slow)."""


class UnsafeUrlError(FetchError):
    """The URL is refused by the safety policy (scheme, host, address, traversal)."""


# ------------------------------------------------------------------------------------ policy
def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeUrlError(f"invalid port in URL {redact(url)}") from None
    return host, port


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc}") from None
    return [str(i[4][0]) for i in infos]


class UrlPolicy:
    """Which URLs may be fetched (see module docstring)."""

    def __init__(self, ls_url: str, allowed_hosts: tuple[str, ...], resolver: Resolver = system_resolver) -> None:
        self.ls = _host_port(ls_url) if ls_url else None
        self.exact: set[tuple[str, int | None]] = set()
        self.suffixes: list[str] = []
        self.any_public = False
        for entry in allowed_hosts:
            e = entry.strip().lower()
            if e == "*":
                self.any_public = True
            elif e.startswith("*."):
                self.suffixes.append(e[1:])
            elif e:
                host, _, port = e.rpartition(":") if re.search(r":\d+$", e) else (e, "", "")
                self.exact.add((host.strip("[]"), int(port) if port else None))
        self.resolver = resolver

    def is_ls(self, url: str) -> bool:
        return self.ls is not None and _host_port(url) == self.ls

    def check(self, url: str) -> None:
        """Raise UnsafeUrlError unless ``url`` may be fetched."""
        parts = urlsplit(url)
        shown = redact(url)
        if parts.scheme not in ("http", "https"):
            raise UnsafeUrlError(f"refused URL scheme {parts.scheme or '(none)'!r} in {shown}: only http(s) is fetched")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise UnsafeUrlError(f"refused URL with credentials in its host part: {shown}")
        if not parts.hostname:
            raise UnsafeUrlError(f"URL without a host: {shown}")
        for piece in [unquote(unquote(parts.path))] + [unquote(v) for _, v in parse_qsl(parts.query)]:
            if any(seg == ".." for seg in re.split(r"[/\\]", piece)):
                raise UnsafeUrlError(f"refused path traversal ('..') in {shown}")
        host, port = _host_port(url)
        if self.ls == (host, port) or (host, port) in self.exact or (host, None) in self.exact:
            return  # explicitly trusted, may be a private address (e.g. a compose service)
        if not (self.any_public or any(host.endswith(s) for s in self.suffixes)):
            raise UnsafeUrlError(
                f"refused image host {host!r}: only LABEL_STUDIO_URL's host and CAMCUT_ALLOWED_HOSTS are fetched ({shown})"
            )
        try:
            addrs = [ipaddress.ip_address(host)]
        except ValueError:
            addrs = [ipaddress.ip_address(a.split("%")[0]) for a in self.resolver(host, port)]
        if not addrs:
            raise FetchError(f"host {host!r} resolves to no address")
        bad = [str(a) for a in addrs if not _is_public(a)]
        if bad:
            raise UnsafeUrlError(f"refused host {host!r}: resolves to non-public address(es) {', '.join(bad)}")


# ------------------------------------------------------------------------------------ fetcher
@dataclass
class Fetched:
    data: bytes
    url: str  # final URL, redacted


class ImageFetcher:
    def __init__(self, settings: Settings, client: LabelStudioClient | None = None, resolver: Resolver = system_resolver) -> None:
        self.settings = settings
        self.client = client or LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key, settings.download_timeout)
        self.policy = UrlPolicy(settings.label_studio_url, settings.allowed_hosts, resolver)
        self.session = requests.Session()
        self.session.trust_env = False

    def resolve(self, value: str, task_id: int | None) -> str:
        """Task data value -> absolute http(s) URL (see module docstring)."""
        if not isinstance(value, str) or not value.strip():
            raise FetchError("the task has no image URL")
        v = value.strip()
        scheme = urlsplit(v).scheme.lower()
        ls = self.settings.label_studio_url
        if v.startswith("/") and not v.startswith("//"):
            if not ls:
                raise FetchError(f"image path {redact(v)} is relative to Label Studio, but LABEL_STUDIO_URL is not set")
            return ls + v
        if scheme in CLOUD_SCHEMES:
            if not ls:
                raise FetchError(f"cloud URI {redact(v)} needs LABEL_STUDIO_URL to be presigned")
            if task_id is None:
                raise FetchError(f"cloud URI {redact(v)} needs the task id to be presigned")
            return f"{ls}/tasks/{int(task_id)}/presign/?fileuri={base64.urlsafe_b64encode(v.encode()).decode()}"
        if scheme in ("http", "https"):
            return v
        if v.startswith("data:"):
            raise UnsafeUrlError("data: URIs are not fetched; store images as files or URLs")
        raise UnsafeUrlError(f"refused URL scheme {scheme or '(none)'!r} in {redact(v)}: only http(s), LS paths and cloud URIs")

    def fetch(self, value: str, task_id: int | None = None) -> Fetched:
        url = self.resolve(value, task_id)
        s = self.settings
        deadline = time.monotonic() + s.download_timeout
        for _hop in range(s.max_redirects + 1):
            self.policy.check(url)
            headers = self.client.auth_headers() if self.policy.is_ls(url) and self.client.api_key else {}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError(f"image download timed out after {s.download_timeout:g} s: {redact(url)}")
            try:
                r = self.session.get(url, headers=headers, stream=True, allow_redirects=False, timeout=(min(remaining, 10.0), remaining))
            except requests.Timeout:
                raise FetchError(f"image download timed out after {s.download_timeout:g} s: {redact(url)}") from None
            except requests.ConnectionError as exc:
                raise FetchError(f"image host unreachable, cannot connect ({type(exc).__name__}): {redact(url)}") from None
            except requests.RequestException as exc:
                raise FetchError(f"image download failed ({type(exc).__name__}): {redact(url)}") from None
            with r:
                if r.status_code in _REDIRECTS:
                    loc = r.headers.get("Location")
                    if not loc:
                        raise FetchError(f"redirect without Location from {redact(url)}")
                    url = urljoin(url, loc)
                    continue
                if r.status_code == 404:
                    raise FetchError(f"image not found (HTTP 404): {redact(url)}")
                if r.status_code in (401, 403):
                    hint = " (check LABEL_STUDIO_API_KEY)" if self.policy.is_ls(url) else ""
                    raise FetchError(f"image access denied (HTTP {r.status_code}){hint}: {redact(url)}")
                if r.status_code != 200:
                    raise FetchError(f"image download failed: HTTP {r.status_code} from {redact(url)}")
                declared = r.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > s.max_download_bytes:
                    raise FetchError(f"image is {declared} bytes, over the limit of {s.max_download_bytes}: {redact(url)}")
                buf = bytearray()
                try:
                    for chunk in r.iter_content(65536):
                        buf += chunk
                        if len(buf) > s.max_download_bytes:
                            raise FetchError(f"image is over the limit of {s.max_download_bytes} bytes: {redact(url)}")
                        if time.monotonic() > deadline:
                            raise FetchError(f"image download timed out after {s.download_timeout:g} s: {redact(url)}")
                except requests.RequestException as exc:
                    raise FetchError(f"image download interrupted ({type(exc).__name__}): {redact(url)}") from None
                return Fetched(bytes(buf), redact(url))
        raise FetchError(f"too many redirects (> {s.max_redirects}) for {redact(value)}")
