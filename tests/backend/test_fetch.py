"""Image access as LS serves it, the SSRF policy, tokens and log redaction."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from backend.config import Settings
from backend.fetch import FetchError, ImageFetcher, UnsafeUrlError, UrlPolicy
from backend.labelstudio import looks_like_jwt
from backend.redaction import redact
from tests.backend.conftest import ACCESS, LABEL_CONFIG, PAT, TOKEN, jpeg

CAT = "2007_000528"


def fake_resolver(table: dict[str, list[str]]) -> Any:
    def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


PUBLIC = fake_resolver({"img.example.com": ["93.184.216.34"], "evil.example.com": ["127.0.0.1"], "meta.example.com": ["169.254.169.254"],
                        "ten.example.com": ["10.1.2.3"], "v6.example.com": ["::1"], "mapped.example.com": ["::ffff:192.168.0.1"],
                        "cdn.example.org": ["151.101.1.1"], "private.corp": ["10.0.0.5"]})


@pytest.mark.parametrize(
    "url, reason",
    [
        ("file:///etc/passwd", "scheme"),
        ("gopher://img.example.com/x", "scheme"),
        ("ftp://img.example.com/x.jpg", "scheme"),
        ("http://user:pw@img.example.com/x.jpg", "credentials"),
        ("http://img.example.com/a/../../etc/passwd", "traversal"),
        ("http://img.example.com/a/%2e%2e/%2e%2e/etc/passwd", "traversal"),
        ("http://img.example.com/data/local-files/?d=..%2F..%2Fetc%2Fpasswd", "traversal"),
        ("http://evil.example.com/x.jpg", "non-public"),
        ("http://meta.example.com/latest/meta-data", "non-public"),
        ("http://ten.example.com/x.jpg", "non-public"),
        ("http://v6.example.com/x.jpg", "non-public"),
        ("http://mapped.example.com/x.jpg", "non-public"),
        ("http://127.0.0.1:9/x.jpg", "only LABEL_STUDIO_URL"),
        ("http://[::1]:9/x.jpg", "only LABEL_STUDIO_URL"),
        ("http://169.254.169.254/latest", "only LABEL_STUDIO_URL"),
        ("http://other.org/x.jpg", "only LABEL_STUDIO_URL"),
    ],
)
def test_policy_refuses(url: str, reason: str) -> None:
    policy = UrlPolicy("http://ls.internal:8080", ("*.example.com", "private.corp"), PUBLIC)
    with pytest.raises(UnsafeUrlError, match=reason):
        policy.check(url)


def test_policy_allows() -> None:
    policy = UrlPolicy("http://ls.internal:8080", ("*.example.com", "private.corp", "cdn.example.org:443"), PUBLIC)
    policy.check("http://ls.internal:8080/data/upload/1/a.jpg")  # LS's own host, whatever it resolves to
    policy.check("http://img.example.com/x.jpg")  # wildcard + public address
    policy.check("https://private.corp/x.jpg")  # explicit entry may be private (e.g. a compose service)
    policy.check("https://cdn.example.org/x.jpg")
    with pytest.raises(UnsafeUrlError):
        policy.check("http://cdn.example.org:8443/x.jpg")  # port pinned by the entry
    with pytest.raises(UnsafeUrlError):
        policy.check("http://ls.internal:9999/x.jpg")  # LS host, other port
    star = UrlPolicy("", ("*",), PUBLIC)
    star.check("http://cdn.example.org/x.jpg")
    for url in ("http://evil.example.com/x.jpg", "http://127.0.0.1:9/x", "http://[::1]/x", "http://169.254.169.254/latest",
                "http://[::ffff:10.0.0.1]/x", "http://0.0.0.0/x"):
        with pytest.raises(UnsafeUrlError, match="non-public"):
            star.check(url)


def fetcher(ls_url: str, **env: str) -> ImageFetcher:
    return ImageFetcher(Settings.from_env({"LABEL_STUDIO_URL": ls_url, "LABEL_STUDIO_API_KEY": TOKEN, **env}))


def test_ls_paths_presign_and_local_files(ls_server: Any) -> None:
    f = fetcher(ls_server.url)
    size = jpeg(CAT).stat().st_size
    assert len(f.fetch(f"/data/upload/3/{CAT}.jpg").data) == size
    assert len(f.fetch(f"/data/local-files/?d=voc/JPEGImages/{CAT}.jpg").data) == size
    n = len(ls_server.requests)
    assert len(f.fetch(f"s3://bucket/dir/{CAT}.jpg", task_id=5).data) == size
    paths = [p for p, _ in ls_server.requests[n:]]
    assert paths[0].startswith("/tasks/5/presign/?fileuri=") and paths[1] == f"/img/{CAT}.jpg"
    assert ls_server.requests[n][1]["Authorization"] == f"Token {TOKEN}"
    for uri in ("gs://b/x.jpg", "azure-blob://c/x.jpg"):
        assert f.resolve(uri, 9).startswith(f"{ls_server.url}/tasks/9/presign/?fileuri=")
    with pytest.raises(FetchError, match="task id"):
        f.resolve("s3://b/x.jpg", None)


def test_personal_access_token_is_refreshed_into_bearer(ls_server: Any) -> None:
    assert looks_like_jwt(PAT) and not looks_like_jwt(TOKEN)
    f = ImageFetcher(Settings.from_env({"LABEL_STUDIO_URL": ls_server.url, "LABEL_STUDIO_API_KEY": PAT}))
    n = len(ls_server.requests)
    assert f.fetch(f"/data/upload/3/{CAT}.jpg").data[:2] == b"\xff\xd8"
    reqs = ls_server.requests[n:]
    assert reqs[0][0].rstrip("/") == "/api/token/refresh"
    assert reqs[1][1]["Authorization"] == f"Bearer {ACCESS}"


def test_token_only_sent_to_label_studio(ls_server: Any) -> None:
    port = ls_server.url.rsplit(":", 1)[1]
    f = fetcher(ls_server.url, CAMCUT_ALLOWED_HOSTS=f"localhost:{port}")
    n = len(ls_server.requests)
    f.fetch(f"http://localhost:{port}/img/{CAT}.jpg")
    assert "Authorization" not in ls_server.requests[n][1]
    # and a redirect from LS to another allowed host drops it too
    n = len(ls_server.requests)
    f.fetch(f"/redirect?to=http://localhost:{port}/img/{CAT}.jpg")
    assert "Authorization" in ls_server.requests[n][1] and "Authorization" not in ls_server.requests[n + 1][1]


def test_redirects_are_rechecked(ls_server: Any) -> None:
    f = fetcher(ls_server.url)
    with pytest.raises(UnsafeUrlError, match="only LABEL_STUDIO_URL"):
        f.fetch("/redirect?to=http://169.254.169.254/latest/meta-data/")
    with pytest.raises(UnsafeUrlError, match="scheme"):
        f.fetch("/redirect?to=file:///etc/passwd")
    with pytest.raises(FetchError, match="too many redirects"):
        fetcher(ls_server.url, CAMCUT_MAX_REDIRECTS="1").fetch(f"/redirect?to=/redirect%3Fto%3D/img/{CAT}.jpg")


def test_plain_url_needs_allow_list(ls_server: Any) -> None:
    port = ls_server.url.rsplit(":", 1)[1]
    with pytest.raises(UnsafeUrlError):
        fetcher(ls_server.url).fetch(f"http://localhost:{port}/img/{CAT}.jpg")
    with pytest.raises(UnsafeUrlError, match="non-public"):  # '*' = any *public* host
        fetcher(ls_server.url, CAMCUT_ALLOWED_HOSTS="*").fetch(f"http://localhost:{port}/img/{CAT}.jpg")


def test_download_cap(ls_server: Any) -> None:
    with pytest.raises(FetchError, match="over the limit"):
        fetcher(ls_server.url, CAMCUT_MAX_DOWNLOAD_BYTES="1000").fetch(f"/data/upload/1/{CAT}.jpg")


def test_redact() -> None:
    line = f"GET /x?token={TOKEN}&a=1 headers={{'Authorization': 'Token {TOKEN}'}} Bearer {ACCESS}"
    out = redact(line)
    assert TOKEN not in out and ACCESS not in out and "a=1" in out
    assert "secret-pass" not in redact("login secret-pass", ("secret-pass",))


def test_tokens_never_logged(app_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = app_factory(LABEL_STUDIO_API_KEY=TOKEN).test_client()
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-signature-value"
    body = {"tasks": [{"id": 1, "data": {"image": f"/data/upload/1/missing.jpg?token={secret}"}},
                      {"id": 2, "data": {"image": f"http://elsewhere.invalid/x.jpg?token={secret}&X-Amz-Signature={secret}"}}],
            "project": "1.1", "label_config": LABEL_CONFIG}
    out = client.post("/predict", json=body).get_json()["results"]
    assert all(r["error"] for r in out)
    text = caplog.text + repr(out)
    assert "missing.jpg" in caplog.text  # the failure is logged ...
    assert secret not in text and TOKEN not in text  # ... without credentials
