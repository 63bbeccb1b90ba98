"""HTTP basic auth: every endpoint but / and /health needs it when BASIC_AUTH_USER is set."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.reliability.conftest import LABEL_CONFIG

USER, PW = "ls-user", "pw-Secret-123456"


def basic(user: str, pw: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}


CALLS: list[tuple[str, str, Any]] = [
    ("post", "/setup", {"project": "1.1", "schema": LABEL_CONFIG}),
    ("post", "/predict", {"tasks": [], "project": "1.1", "label_config": LABEL_CONFIG}),
    # /webhook is not here: Label Studio sends webhooks without credentials, and camcut only takes
    # them as notifications (tests/backend/test_webhook.py::test_webhook_with_basic_auth_and_secret)
    ("get", "/metrics", None),
]
WRONG = [
    None,
    basic(USER, "wrong"),
    basic("other", PW),
    basic(USER, ""),
    basic(USER, PW + "x"),
    basic(USER.upper(), PW),
    {"Authorization": f"Bearer {PW}"},
    {"Authorization": f"Token {PW}"},
    {"Authorization": "Basic !!!not-base64"},
    {"Authorization": "Basic " + base64.b64encode(USER.encode()).decode()},  # no colon
]


@pytest.fixture(scope="module")
def auth_client(tmp_path_factory: pytest.TempPathFactory, camnet: Any, ls_server: Any) -> Any:
    from backend.app import create_app
    from backend.config import Settings

    s = Settings.from_env(
        {
            "LABEL_STUDIO_URL": ls_server.url,
            "MODEL_DIR": str(tmp_path_factory.mktemp("auth")),
            "BASIC_AUTH_USER": USER,
            "BASIC_AUTH_PASS": PW,
            "CAMCUT_WEBHOOK_SYNC": "1",
        }
    )
    return create_app(s, net=camnet).test_client()


@pytest.mark.parametrize("method, path, body", CALLS, ids=[c[1] for c in CALLS])
def test_protected_endpoints(auth_client: Any, method: str, path: str, body: Any) -> None:
    call = getattr(auth_client, method)
    for headers in WRONG:
        r = call(path, json=body, headers=headers or {}) if body is not None else call(path, headers=headers or {})
        assert r.status_code == 401, (path, headers, r.status_code)
        assert r.headers.get("WWW-Authenticate", "").startswith("Basic")
        assert PW not in r.get_data(as_text=True)
    r = call(path, json=body, headers=basic(USER, PW)) if body is not None else call(path, headers=basic(USER, PW))
    assert r.status_code in (200, 201), (path, r.get_data(as_text=True))


def test_unknown_paths_and_methods_need_auth_too(auth_client: Any) -> None:
    for path in ("/versions", "/train", "/nope", "/health/../metrics"):
        assert auth_client.get(path).status_code == 401, path
    assert auth_client.get("/nope", headers=basic(USER, PW)).status_code == 404


def test_open_endpoints(auth_client: Any) -> None:
    for path in ("/", "/health"):
        for headers in WRONG:
            r = auth_client.get(path, headers=headers or {})
            assert r.status_code == 200 and r.get_json()["status"] == "UP"
