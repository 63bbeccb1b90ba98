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
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

import requests

from .config import Settings
from .deadline import Deadline, deadline_session
from .labelstudio import LabelStudioClient, looks_like_jwt, url_origin
from .redaction import RedactingFilter, log_safe, redact

log = logging.getLogger("backend.fetch")

__all__ = [
    "CLOUD_SCHEMES",
    "FetchError",
    "Fetched",
    "ImageFetcher",
    "LabelStudioClient",
    "RedactingFilter",
    "UnsafeUrlError",
    "UrlPolicy",
    "looks_like_jwt",
    "redact",
    "system_resolver",
]

CLOUD_SCHEMES = ("s3", "gs", "gcs", "azure-blob", "azure")
_REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(ValueError):
    """The image could not be obtained (missing, HTTP error, too big, too slow)."""


class UnsafeUrlError(FetchError):
    """The URL is refused by the safety policy (scheme, host, address, traversal)."""


# ------------------------------------------------------------------------------------ policy
def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port): what must match for a URL to be Label Studio's own (the key's
    destination); the LS client's own parse, with an invalid port refused."""
    scheme, host, port = url_origin(url)
    if port is None:
        raise UnsafeUrlError(f"invalid port in URL {log_safe(url)}")
    return scheme, host, port


def _host_port(url: str) -> tuple[str, int]:
    return _origin(url)[1:]


# IPv6 forms that carry an IPv4 address a router or the kernel may turn back into IPv4 traffic
# (RFC 4291 compatible/mapped, RFC 6052 NAT64, RFC 6145 SIIT, RFC 3056 6to4, RFC 4380 Teredo).
_V4_COMPATIBLE = ipaddress.ip_network("::/96")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # site-defined embedding: never public


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    out = []
    if ip.ipv4_mapped is not None:
        out.append(ip.ipv4_mapped)
    if ip in _V4_COMPATIBLE or ip in _SIIT or ip in _NAT64:
        out.append(low32)
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out.extend(ip.teredo)  # (server, client); the client address is de-obfuscated by ipaddress
    return out


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False
        embedded = _embedded_ipv4(ip)
        if embedded:  # the IPv6 form is only as public as every IPv4 address it carries
            return all(v4.is_global and not v4.is_multicast for v4 in embedded)
    return ip.is_global and not ip.is_multicast


# Label Studio 1.23.2's URLs that serve task images (label_studio/data_import/urls.py,
# io_storages/urls.py): the only paths the API key is ever sent to. Anything else on LS's host
# (the API: /api/projects/..., exports, users) is refused before a request is made, whoever asks.
_LS_IMAGE_PATHS = re.compile(
    r"/data/upload/.+"  # uploaded files
    r"|/data/local-files/"  # local files storage, ?d=<path>
    r"|/storage-data/uploaded/"  # uploaded files through the storage proxy, ?filepath=<path>
    r"|/(?:tasks|projects)/\d+/(?:resolve|presign)/"  # cloud storage URIs: proxied or redirected, ?fileuri=<b64>
)


def is_ls_image_path(path: str) -> bool:
    """``path`` (percent-decoded as Django routes it) is one of LS's image URLs."""
    return _LS_IMAGE_PATHS.fullmatch(unquote(path)) is not None


Resolver = Callable[[str, int], list[str]]


def _fixed_address(host: str) -> bool:
    """An IP literal or ``localhost``: names whose address no remote DNS answer decides."""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc}") from None
    return [str(i[4][0]) for i in infos]


class UrlPolicy:
    """Which URLs may be fetched (see module docstring)."""

    def __init__(self, ls_url: str, allowed_hosts: tuple[str, ...], resolver: Resolver = system_resolver) -> None:
        self.ls = _origin(ls_url) if ls_url else None
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
        """Same scheme, host and port as LABEL_STUDIO_URL (http on LS's https port is not LS: the key
        would go in clear), or the same server by another name (:meth:`same_server`)."""
        if self.ls is None:
            return False
        scheme, host, port = _origin(url)
        return (scheme, host, port) == self.ls or (scheme == self.ls[0] and self.same_server(host, port))

    def same_server(self, host: str, port: int) -> bool:
        """``host:port`` names LS's server by another name (``localhost`` vs ``127.0.0.1``): same port
        and a shared address. Only for IP literals and ``localhost``, whose addresses no remote DNS
        controls (a public name could resolve to LS's address now and elsewhere at connect time)."""
        if self.ls is None or port != self.ls[2] or not _fixed_address(host):
            return False
        try:
            return bool(self._addresses(host) & self._addresses(self.ls[1]))
        except (FetchError, ValueError):
            return False

    def _addresses(self, host: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        try:
            return {ipaddress.ip_address(host.strip("[]"))}
        except ValueError:
            return {ipaddress.ip_address(a.split("%")[0]) for a in self.resolver(host, self.ls[2] if self.ls else 80)}

    def check(self, url: str) -> None:
        """Raise UnsafeUrlError unless ``url`` may be fetched."""
        parts = urlsplit(url)
        shown = log_safe(url)
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
        if self.is_ls(url):
            if not is_ls_image_path(parts.path):
                raise UnsafeUrlError(
                    f"refused {shown}: not a Label Studio image path (/data/upload/, /data/local-files/, "
                    "/storage-data/uploaded/, /tasks|projects/<id>/resolve|presign/)"
                )
            return  # LS itself: trusted even on a private address (e.g. a compose service)
        if (host, port) in self.exact or (host, None) in self.exact:
            return  # explicitly trusted, may be a private address (e.g. a compose service)
        if not (self.any_public or any(host.endswith(s) for s in self.suffixes)):
            raise UnsafeUrlError(
                f"refused image host {log_safe(host, 80)!r}: only LABEL_STUDIO_URL's host and "
                f"CAMCUT_ALLOWED_HOSTS are fetched ({shown})"
            )
        try:
            addrs = [ipaddress.ip_address(host)]
        except ValueError:
            addrs = [ipaddress.ip_address(a.split("%")[0]) for a in self.resolver(host, port)]
        if not addrs:
            raise FetchError(f"host {host!r} resolves to no address")
        bad = [str(a) for a in addrs if not _is_public(a)]
        if bad:
            raise UnsafeUrlError(f"refused host {log_safe(host, 80)!r}: resolves to non-public address(es) {', '.join(bad)}")


def _ls_refused(status: int) -> str:
    """What may be said about LS's answer: its status class, never its body, size or exact code."""
    return f"Label Studio refused the image (HTTP {status // 100}xx)"


# ------------------------------------------------------------------------------------ fetcher
@dataclass
class Fetched:
    data: bytes
    url: str  # final URL, redacted


class ImageFetcher:
    def __init__(self, settings: Settings, client: LabelStudioClient | None = None, resolver: Resolver = system_resolver) -> None:
        self.settings = settings
        self.client = client or LabelStudioClient(
            settings.label_studio_url, settings.label_studio_api_key, settings.download_timeout
        )
        self.policy = UrlPolicy(settings.label_studio_url, settings.allowed_hosts, resolver)

    def resolve(self, value: str, task_id: int | None) -> str:
        """Task data value -> absolute http(s) URL (see module docstring)."""
        if not isinstance(value, str) or not value.strip():
            raise FetchError("the task has no image URL")
        v = value.strip()
        scheme = urlsplit(v).scheme.lower()
        ls = self.settings.label_studio_url
        if v.startswith("/") and not v.startswith("//"):
            if not ls:
                raise FetchError(f"image path {log_safe(v)} is relative to Label Studio, but LABEL_STUDIO_URL is not set")
            return ls + v
        if scheme in CLOUD_SCHEMES:
            if not ls:
                raise FetchError(f"cloud URI {log_safe(v)} needs LABEL_STUDIO_URL to be presigned")
            if task_id is None:
                raise FetchError(f"cloud URI {log_safe(v)} needs the task id to be presigned")
            return f"{ls}/tasks/{int(task_id)}/presign/?fileuri={base64.urlsafe_b64encode(v.encode()).decode()}"
        if scheme in ("http", "https"):
            return v
        if v.startswith("data:"):
            raise UnsafeUrlError("data: URIs are not fetched; store images as files or URLs")
        raise UnsafeUrlError(f"refused URL scheme {scheme or '(none)'!r} in {log_safe(v)}: only http(s), LS paths and cloud URIs")

    def fetch(self, value: str, task_id: int | None = None) -> Fetched:
        url = self.resolve(value, task_id)
        s = self.settings
        timed_out = f"image download timed out after {s.download_timeout:g} s"
        with Deadline(s.download_timeout) as deadline, deadline_session() as session:
            try:
                return self._fetch(session, url, value, deadline)
            except FetchError:
                if deadline.expired.is_set():
                    raise FetchError(f"{timed_out}: {log_safe(url)}") from None
                raise

    def _fetch(self, session: requests.Session, url: str, value: str, deadline: Deadline) -> Fetched:
        s = self.settings
        for _hop in range(s.max_redirects + 1):
            self.policy.check(url)
            is_ls = self.policy.is_ls(url)
            headers = self.client.auth_headers() if is_ls and self.client.api_key else {}
            remaining = deadline.remaining()
            if remaining <= 0:
                raise FetchError(f"image download timed out after {s.download_timeout:g} s: {log_safe(url)}")
            try:
                r = session.get(
                    url, headers=headers, stream=True, allow_redirects=False, timeout=(min(remaining, 10.0), remaining)
                )
            except requests.Timeout:
                raise FetchError(f"image download timed out after {s.download_timeout:g} s: {log_safe(url)}") from None
            except requests.ConnectionError as exc:
                raise FetchError(f"image host unreachable, cannot connect ({type(exc).__name__}): {log_safe(url)}") from None
            except requests.RequestException as exc:
                raise FetchError(f"image download failed ({type(exc).__name__}): {log_safe(url)}") from None
            with r:
                if r.status_code in _REDIRECTS:
                    loc = r.headers.get("Location")
                    if not loc:
                        raise FetchError(f"redirect without Location from {log_safe(url)}")
                    url = urljoin(url, loc)
                    continue
                if is_ls and r.status_code != 200:
                    hint = " (check LABEL_STUDIO_API_KEY)" if r.status_code in (401, 403) else ""
                    raise FetchError(f"{_ls_refused(r.status_code)}{hint}: {log_safe(url)}")
                if r.status_code == 404:
                    raise FetchError(f"image not found (HTTP 404): {log_safe(url)}")
                if r.status_code in (401, 403):
                    raise FetchError(f"image access denied (HTTP {r.status_code}): {log_safe(url)}")
                if r.status_code != 200:
                    raise FetchError(f"image download failed: HTTP {r.status_code} from {log_safe(url)}")
                over = f"image is over the limit of {s.max_download_bytes} bytes: {log_safe(url)}"  # never the size LS declared
                declared = r.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > s.max_download_bytes:
                    raise FetchError(over)
                buf = bytearray()
                try:
                    for chunk in r.iter_content(65536):
                        buf += chunk
                        if len(buf) > s.max_download_bytes:
                            raise FetchError(over)
                        if deadline.remaining() <= 0:
                            raise FetchError(f"image download timed out after {s.download_timeout:g} s: {log_safe(url)}")
                except requests.RequestException as exc:
                    raise FetchError(f"image download interrupted ({type(exc).__name__}): {log_safe(url)}") from None
                return Fetched(bytes(buf), log_safe(url))
        raise FetchError(f"too many redirects (> {s.max_redirects}) for {log_safe(value)}")
