"""JWT bearer tokens: verified against a JWKS file, mapped to an existing account and its scopes,
refused (UNAUTHENTICATED, saying why) when anything is off."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from smsgw.domain import credentials as cr
from smsgw.domain import errors as de
from smsgw_intake.bearer_tokens import JwtSettings, JwtVerifier, looks_like_jwt

ISSUER, AUDIENCE = "https://login.example.com/", "smsgw"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(public_key, kid: str, algorithm) -> dict:
    return {**algorithm.to_jwk(public_key, as_dict=True), "kid": kid, "use": "sig"}


@pytest.fixture
def jwks(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(
        json.dumps(
            {
                "keys": [
                    _jwk(RSA_KEY.public_key(), "rsa-1", RSAAlgorithm),
                    {**_jwk(EC_KEY.public_key(), "ec-1", ECAlgorithm), "alg": "ES256"},
                ]
            }
        )
    )
    return path


@pytest.fixture
def directory():
    directory = cr.Directory()
    directory.apply(directory.create_account("acme", "", actor="test", now=datetime.now(UTC)))
    return directory


def token(key=RSA_KEY, kid="rsa-1", algorithm="RS256", **claims) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "smsgw_account": "acme",
        "scope": "send read openid",
        "client_id": "acme-backend",
        **claims,
    }
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def refusal(verifier: JwtVerifier, directory, credential: str) -> str:
    with pytest.raises(de.Unauthenticated) as info:
        verifier.principal(credential, directory)
    return str(info.value)


def test_a_valid_token_is_its_account_with_the_scopes_smsgw_knows(jwks, directory):
    verifier = JwtVerifier(JwtSettings(jwks, ISSUER, AUDIENCE))
    principal = verifier.principal(token(), directory)
    assert principal == cr.Principal("acme", "jwt:acme-backend", frozenset({cr.SEND, cr.READ}))
    ec_token = token(EC_KEY, kid="ec-1", algorithm="ES256", scope="admin act-as-any-account")
    # act-as-any-account never comes from outside; admin does when the provider grants it.
    assert verifier.principal(ec_token, directory).scopes == frozenset({cr.ADMIN})


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
        ({"aud": "another-service"}, "its audience is not 'smsgw'"),
        ({"iss": "https://evil.example/"}, "its issuer is not"),
        ({"exp": None}, "it has no 'exp' claim"),
        ({"smsgw_account": "globex"}, "names no account of this platform"),
        ({"smsgw_account": None}, "names no account of this platform"),
        ({"smsgw_account": "@unassigned"}, "names no account of this platform"),
    ],
)
def test_a_token_with_a_wrong_claim_is_refused_saying_which(jwks, directory, claims, why):
    verifier = JwtVerifier(JwtSettings(jwks, ISSUER, AUDIENCE))
    message = refusal(verifier, directory, token(**claims))
    assert message.startswith("bearer token refused: ") and why in message


def test_forged_tokens_are_refused(jwks, directory):
    verifier = JwtVerifier(JwtSettings(jwks, ISSUER, AUDIENCE))
    header, payload, signature = token().split(".")
    other = token(OTHER_KEY)  # right kid, another private key
    assert "signature does not verify" in refusal(verifier, directory, other)
    # The payload changed (another account), the signature kept.
    forged_payload = jwt.utils.base64url_encode(
        json.dumps({"iss": ISSUER, "aud": AUDIENCE, "exp": 2**40, "smsgw_account": "acme", "scope": "admin"}).encode()
    )
    assert "signature does not verify" in refusal(
        verifier, directory, f"{header}.{forged_payload.decode()}.{signature}"
    )
    assert "not in the JWKS" in refusal(verifier, directory, token(kid="rsa-9"))
    # alg none, and HS256 keyed with the RSA public key (the algorithm confusion attack).
    unsigned = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "exp": 2**40, "smsgw_account": "acme"},
        None,
        algorithm="none",
        headers={"kid": "rsa-1"},
    )
    assert "does not match its key" in refusal(verifier, directory, unsigned)
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import hashlib
    import hmac

    signing_input = (
        f"{jwt.utils.base64url_encode(json.dumps({'alg': 'HS256', 'kid': 'rsa-1'}).encode()).decode()}.{payload}"
    )
    mac = jwt.utils.base64url_encode(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()).decode()
    assert "does not match its key" in refusal(verifier, directory, f"{signing_input}.{mac}")
    assert "not a well-formed JWT" in refusal(verifier, directory, "a.b.c")


def test_the_jwks_is_read_again_when_it_changes_and_a_broken_file_keeps_the_old_keys(jwks, directory):
    verifier = JwtVerifier(JwtSettings(jwks, ISSUER, AUDIENCE), reload_every=0.0)
    assert "not in the JWKS" in refusal(verifier, directory, token(OTHER_KEY, kid="rsa-2"))
    jwks.write_text(json.dumps({"keys": [_jwk(OTHER_KEY.public_key(), "rsa-2", RSAAlgorithm)]}))
    os.utime(jwks, (time.time() + 5, time.time() + 5))  # a new mtime even within the clock's resolution
    assert verifier.principal(token(OTHER_KEY, kid="rsa-2"), directory).account_id == "acme"
    assert "not in the JWKS" in refusal(verifier, directory, token())  # the rotated-out key
    jwks.write_text("{half a file")
    os.utime(jwks, (time.time() + 10, time.time() + 10))
    assert verifier.principal(token(OTHER_KEY, kid="rsa-2"), directory).account_id == "acme"


def test_configuration_mistakes_stop_the_start(jwks, tmp_path):
    with pytest.raises(ValueError, match="need both an issuer"):
        JwtVerifier(JwtSettings(jwks, "", AUDIENCE))
    symmetric = tmp_path / "hs.json"
    symmetric.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "h"}]}))
    with pytest.raises(ValueError, match="no usable public key"):
        JwtVerifier(JwtSettings(symmetric, ISSUER, AUDIENCE))


def test_api_keys_and_jwts_are_told_apart():
    assert looks_like_jwt(token()) and not looks_like_jwt("sgw_0123456789abcdef_secretpart")
