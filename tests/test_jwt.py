"""JWT bearer tokens: verified against a JWKS served on loopback, membership decides scopes."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tenants import services
from tenants.jwt_auth import jwks
from tenants.models import Membership, Role
from tests.conftest import ApiClient

ISSUER = "https://id.example.test/"
AUDIENCE = "engram-cloud"


class SigningKey:
    def __init__(self, kid: str, algorithm: str) -> None:
        self.kid, self.algorithm = kid, algorithm
        if algorithm == "RS256":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        self.jwk.update(kid=kid, alg=algorithm, use="sig")

    def sign(self, **claims: object) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **claims}
        return jwt.encode(
            payload, self.private, algorithm=self.algorithm, headers={"kid": self.kid}
        )


class Jwks(BaseHTTPRequestHandler):
    keys: list[dict] = []
    fetches = 0

    def do_GET(self) -> None:
        type(self).fetches += 1
        body = json.dumps({"keys": type(self).keys}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def identity_provider(settings) -> Iterator[dict[str, SigningKey]]:
    keys = {"rsa": SigningKey("rsa-1", "RS256"), "ec": SigningKey("ec-1", "ES256")}
    Jwks.keys, Jwks.fetches = [keys["rsa"].jwk, keys["ec"].jwk], 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.ENGRAM_JWT_JWKS_URL = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    settings.ENGRAM_JWT_ISSUER = ISSUER
    settings.ENGRAM_JWT_AUDIENCE = AUDIENCE
    jwks.clear()
    yield keys
    server.shutdown()
    server.server_close()
    jwks.clear()


def member_client(token: str, tenant: str | None = "acme") -> ApiClient:
    headers = {"X-Engram-Tenant": tenant} if tenant else {}
    return ApiClient(token, **headers)


@pytest.fixture
def viewer(acme):
    user = services.get_or_create_user("vera@example.com")
    Membership.objects.create(user=user, tenant=acme.tenant, role=Role.VIEWER)
    return user


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response.json()["error"] == code


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_a_members_token_reads_and_writes_with_their_role(identity_provider, acme, kind):
    api = member_client(identity_provider[kind].sign(email="alice@example.com"))
    created = api.post("/v1/memories", {"content": "written by alice's token"})
    assert created.status_code == 201
    assert api.get(f"/v1/memories/{created.json()['id']}").status_code == 200


def test_a_viewer_reads_and_searches_but_cannot_write(identity_provider, acme, viewer):
    acme.client().post("/v1/memories", {"content": "something to read"})
    api = member_client(identity_provider["rsa"].sign(email="vera@example.com"))
    assert api.get("/v1/memories").status_code == 200
    assert api.post("/v1/search", {"query": "read"}).status_code == 200
    assert_error(api.post("/v1/memories", {"content": "nope"}), 403, "forbidden")
    assert_error(api.delete("/v1/memories/1"), 403, "forbidden")


def test_a_person_who_is_not_a_member_gets_403(identity_provider, acme, globex):
    api = member_client(identity_provider["rsa"].sign(email="bob@example.com"), tenant="acme")
    assert_error(api.get("/v1/memories"), 403, "forbidden")


def test_a_person_without_an_account_gets_401(identity_provider, acme):
    api = member_client(identity_provider["rsa"].sign(email="nobody@example.com"))
    assert_error(api.get("/v1/memories"), 401, "unauthorized")


def test_the_tenant_must_be_named_unambiguously(identity_provider, acme, globex):
    token = identity_provider["rsa"].sign(email="alice@example.com")
    assert_error(member_client(token, tenant=None).get("/v1/memories"), 400, "tenant_required")
    assert_error(member_client(token, tenant="nosuch").get("/v1/memories"), 404, "tenant_not_found")
    response = member_client(token).client.get(
        "/v1/memories",
        HTTP_HOST="globex.engram.test",
        headers={"Authorization": f"Bearer {token}", "X-Engram-Tenant": "acme"},
    )
    assert_error(response, 400, "tenant_ambiguous")
    by_host = member_client(token, tenant=None).client.get(
        "/v1/memories", HTTP_HOST="acme.engram.test", headers={"Authorization": f"Bearer {token}"}
    )
    assert by_host.status_code == 200


def unsigned(**claims: object) -> str:
    return jwt.encode(claims, None, algorithm="none", headers={"kid": "rsa-1"})


def hmac_with_public_key(keys: dict[str, SigningKey], **claims: object) -> str:
    public_pem = (
        keys["rsa"]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = {"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}
    segments = [jwt.utils.base64url_encode(json.dumps(part).encode()) for part in (header, claims)]
    signing_input = b".".join(segments)
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(
            lambda k: k["rsa"].sign(email="alice@example.com", exp=int(time.time()) - 120),
            id="expired",
        ),
        pytest.param(
            lambda k: k["rsa"].sign(email="alice@example.com", aud="someone-else"), id="wrong-aud"
        ),
        pytest.param(
            lambda k: k["rsa"].sign(email="alice@example.com", iss="https://evil.test/"),
            id="wrong-iss",
        ),
        pytest.param(
            lambda k: k["rsa"].sign(email="alice@example.com", nbf=int(time.time()) + 600),
            id="not-yet-valid",
        ),
        pytest.param(
            lambda k: SigningKey("rogue", "RS256").sign(email="alice@example.com"), id="unknown-kid"
        ),
        pytest.param(
            lambda k: unsigned(
                email="alice@example.com", iss=ISSUER, aud=AUDIENCE, exp=int(time.time()) + 300
            ),
            id="alg-none",
        ),
        pytest.param(
            lambda k: hmac_with_public_key(
                k, email="alice@example.com", iss=ISSUER, aud=AUDIENCE, exp=int(time.time()) + 300
            ),
            id="hs256-with-public-key",
        ),
        pytest.param(lambda k: "not.a.jwt", id="garbage"),
    ],
)
def test_bad_tokens_get_the_same_401(identity_provider, acme, make_token):
    response = member_client(make_token(identity_provider)).get("/v1/memories")
    assert_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"] == "Bearer"


def test_clock_skew_of_up_to_a_minute_is_tolerated(identity_provider, acme):
    token = identity_provider["rsa"].sign(
        email="alice@example.com", exp=int(time.time()) - 30, nbf=int(time.time()) + 30
    )
    assert member_client(token).get("/v1/memories").status_code == 200


def test_keys_rotated_at_the_provider_are_picked_up_without_a_restart(identity_provider, acme):
    assert (
        member_client(identity_provider["rsa"].sign(email="alice@example.com"))
        .get("/v1/memories")
        .status_code
        == 200
    )
    rotated = SigningKey("rsa-2", "RS256")
    Jwks.keys = [rotated.jwk]
    jwks._fetched_at -= 61  # the last fetch was over a minute ago
    api = member_client(rotated.sign(email="alice@example.com"))
    assert api.get("/v1/memories").status_code == 200


def test_unknown_kids_refresh_the_jwks_at_most_once_a_minute(identity_provider, acme):
    rogue = SigningKey("rogue", "RS256")
    for _ in range(5):
        member_client(rogue.sign(email="alice@example.com")).get("/v1/memories")
    assert Jwks.fetches == 1


def test_without_a_jwks_url_tokens_are_refused(settings, acme):
    settings.ENGRAM_JWT_JWKS_URL = ""
    key = SigningKey("rsa-1", "RS256")
    assert_error(
        member_client(key.sign(email="alice@example.com")).get("/v1/memories"), 401, "unauthorized"
    )
