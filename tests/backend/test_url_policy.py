"""The URL policy's own checks (no traffic): which Label Studio paths get the key, scheme-exact
LS matching, IPv4 addresses hidden in IPv6 forms, and log-safe rendering of hostile URLs."""

from __future__ import annotations

from typing import Any

import pytest

from backend.fetch import UnsafeUrlError, UrlPolicy

LS = "https://ls.internal:8443"


def no_resolver(host: str, port: int) -> list[str]:  # literal addresses only: a name lookup is a test failure
    raise AssertionError(f"unexpected resolve of {host!r}")


def table_resolver(table: dict[str, list[str]]) -> Any:
    return lambda host, port: table[host]


# ------------------------------------------------------------------------------------ item 7: LS paths
@pytest.mark.parametrize(
    "path",
    [
        "/data/upload/3/abc-cat.jpg",
        "/data/local-files/?d=images/cat.jpg",
        "/storage-data/uploaded/?filepath=upload/3/cat.jpg",
        "/tasks/12/presign/?fileuri=czM6Ly9iL2suanBn",
        "/tasks/12/resolve/?fileuri=czM6Ly9iL2suanBn",
        "/projects/4/presign/?fileuri=czM6Ly9iL2suanBn",
        "/projects/4/resolve/?fileuri=czM6Ly9iL2suanBn",
    ],
)
def test_ls_image_paths_allowed(path: str) -> None:
    UrlPolicy(LS, (), no_resolver).check(LS + path)


@pytest.mark.parametrize(
    "path",
    [
        "/api/projects/",
        "/api/projects/1/export?exportType=JSON",
        "/api/current-user/whoami",
        "/api/tasks/1/",
        "/%61pi/projects/",  # Django routes on the percent-decoded path
        "/tasks/12/presign/x/../../../api/projects/",
        "/x/data/upload/a.jpg",  # only anchored image prefixes
        "/tasks/abc/presign/?fileuri=x",
        "/admin/",
        "/",
    ],
)
def test_ls_other_paths_refused_before_any_request(path: str) -> None:
    with pytest.raises(UnsafeUrlError, match=r"not a Label Studio image path|traversal"):
        UrlPolicy(LS, (), no_resolver).check(LS + path)


# ------------------------------------------------------------------------------------ item 8: scheme
def test_is_ls_compares_scheme_host_and_port() -> None:
    p = UrlPolicy(LS, (), no_resolver)
    assert p.is_ls(LS + "/data/upload/a.jpg")
    assert not p.is_ls("http://ls.internal:8443/data/upload/a.jpg")  # the key would go in clear text
    assert not p.is_ls("https://ls.internal:443/data/upload/a.jpg")
    with pytest.raises(UnsafeUrlError, match="refused image host"):
        p.check("http://ls.internal:8443/data/upload/a.jpg")
    assert UrlPolicy("http://ls:8080", ()).is_ls("HTTP://LS:8080/data/upload/a.jpg")  # scheme and host are case-insensitive
    assert UrlPolicy("https://ls", ()).is_ls("https://ls:443/data/upload/a.jpg")  # default port made explicit


# ------------------------------------------------------------------------------------ item 10: IPv6
EMBEDDED = [
    "::169.254.169.254",  # IPv4-compatible (deprecated)
    "::127.0.0.1",
    "::ffff:169.254.169.254",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:0:169.254.169.254",  # IPv4-translated (SIIT)
    "64:ff9b::a9fe:a9fe",  # NAT64 well-known prefix -> 169.254.169.254
    "64:ff9b::7f00:1",  # NAT64 -> 127.0.0.1
    "64:ff9b:1::a9fe:a9fe",  # NAT64 local-use prefix
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo (client 192.0.2.45 obfuscated)
    "2001:0:a9fe:a9fe::1",  # Teredo, server 169.254.169.254
]


@pytest.mark.parametrize("addr", EMBEDDED)
def test_ipv6_embedding_private_ipv4_refused_with_wildcard(addr: str) -> None:
    p = UrlPolicy(LS, ("*",), no_resolver)
    with pytest.raises(UnsafeUrlError, match="non-public"):
        p.check(f"http://[{addr}]/x.jpg")
    names = UrlPolicy(LS, ("*.example.com",), table_resolver({"v6.example.com": [addr]}))
    with pytest.raises(UnsafeUrlError, match="non-public"):
        names.check("http://v6.example.com/x.jpg")


@pytest.mark.parametrize("addr", ["2606:4700::6810:85e5", "2002:5db8:d822::1", "64:ff9b::5db8:d822"])
def test_ipv6_public_still_allowed(addr: str) -> None:
    UrlPolicy(LS, ("*",), no_resolver).check(f"http://[{addr}]/x.jpg")  # 6to4 / NAT64 of the public 93.184.216.34


# ------------------------------------------------------------------------------------ item 11: logs
def test_log_safe_escapes_and_truncates() -> None:
    from backend.fetch import log_safe

    forged = "http://x/a.jpg\r\n2026-01-01 00:00:00 INFO backend.app: admin logged in"
    out = log_safe(forged)
    assert "\r" not in out and "\n" not in out and "\\x0d\\x0a" in out
    huge = "http://x/" + "A" * 2_000_000
    out = log_safe(huge)
    assert len(out) < 400 and "2000009 chars" in out
    assert log_safe("http://x/?token=abcdefghijkl") == "http://x/?token=***"
