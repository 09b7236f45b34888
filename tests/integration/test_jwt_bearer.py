"""JWT bearer tokens on the running platform: intake verifies a token from an identity provider
(its JWKS file) and acts for the account the token names, with the token's scopes, over real gRPC;
API keys keep working beside them."""

from __future__ import annotations

import json
import time

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from smsgw.domain import status as st
from smsgw.grpcx.errors import error_info_of
from smsgw.v1 import messaging_service_pb2 as api
from smsgw.v1 import messaging_service_pb2_grpc as api_grpc
from tests.conftest import start_platform
from tests.integration.helpers import send_request, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ISSUER, AUDIENCE = "https://login.example.test/", "smsgw-test"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


def token(account: str, scope: str = "send read", lifetime: int = 300) -> str:
    now = int(time.time())
    return jwt.encode(
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + lifetime,
            "smsgw_account": account,
            "scope": scope,
            "client_id": f"{account}-backend",
        },
        KEY,
        algorithm="RS256",
        headers={"kid": "test-1"},
    )


async def test_a_jwt_acts_for_its_account_with_its_scopes_and_never_for_another(broker, tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "kid": "test-1"}]}))
    platform = await start_platform(
        broker,
        tmp_path,
        "jwt",
        auth="api-keys",
        extra_env={"SMSGW_JWT_JWKS_FILE": str(jwks), "SMSGW_JWT_ISSUER": ISSUER, "SMSGW_JWT_AUDIENCE": AUDIENCE},
    )
    try:
        other_key = await platform.api_key("jwt-other")  # creates that account too
        await platform.api_key("jwt-tenant")  # the account the token will name
        async with grpc.aio.insecure_channel(platform.intake_address) as channel:
            stub = api_grpc.MessagingServiceStub(channel)
            sent = await stub.SendMessage(send_request(body="by token"), metadata=bearer(token("jwt-tenant")))
            final = await wait_for_status(stub, sent.message.id, {st.DELIVERED}, metadata=bearer(token("jwt-tenant")))
            assert final.account_id == "jwt-tenant"
            # Another account's API key does not see it; the token's own account does.
            with pytest.raises(grpc.aio.AioRpcError) as other:
                await stub.GetMessage(api.GetMessageRequest(id=sent.message.id), metadata=bearer(other_key))
            assert other.value.code() == grpc.StatusCode.NOT_FOUND
            # The token's scopes hold: a read-only token cannot send.
            with pytest.raises(grpc.aio.AioRpcError) as read_only:
                await stub.SendMessage(send_request(body="no"), metadata=bearer(token("jwt-tenant", scope="read")))
            assert read_only.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # A token never acts for another account, and an expired or foreign one is refused.
            with pytest.raises(grpc.aio.AioRpcError) as acting:
                await stub.SendMessage(
                    send_request(body="no"), metadata=bearer(token("jwt-tenant")) + (("x-smsgw-account", "jwt-other"),)
                )
            assert acting.value.code() == grpc.StatusCode.PERMISSION_DENIED
            for refused, why in (
                (token("jwt-tenant", lifetime=-3600), "expired"),
                (token("nobody"), "names no account"),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await stub.SendMessage(send_request(body="no"), metadata=bearer(refused))
                assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED and why in error.value.details()
                assert error_info_of(error.value).reason == "UNAUTHENTICATED"
    finally:
        platform.stop()
