"""Who is calling: the account and scopes behind a request's API key.

`api-keys` (the default) takes the account from the key (`authorization: Bearer sgw_...`);
only a key with the act-as-any-account scope (the platform's own services) may name another
account in `x-smsgw-account`. When JWT bearer tokens are configured (bearer_tokens.py), a
bearer credential that is a JWT is verified against the identity provider's keys instead. `trusted-header` is the old, insecure behaviour, for test
harnesses only: the account is whatever `x-smsgw-account` says, and every call may do
everything. It must be chosen explicitly, and intake logs a warning at start when it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import grpc

from smsgw.domain import credentials as cr
from smsgw.domain import errors as de

from .bearer_tokens import JwtVerifier, looks_like_jwt

log = logging.getLogger(__name__)

AuthMode = Literal["api-keys", "trusted-header"]
ACCOUNT_HEADER = "x-smsgw-account"
DEFAULT_ACCOUNT = "default"
_EVERYTHING = frozenset(cr.SCOPE_NAMES)


@dataclass(frozen=True)
class SendGrant:
    senders: tuple[str, ...] | None  # normalised, the default first; None: any valid sender
    destinations: tuple[str, ...]  # ISO country codes; empty: every country
    sender_pool: bool = False  # no `from`: a sender in the destination's country (senders.choose_sender)
    smart_encoding: bool = False  # look-alike characters replaced (encoding.smart_encoded)


class Authenticator:
    def __init__(
        self,
        directory: cr.Directory,
        mode: AuthMode = "api-keys",
        default_destinations: tuple[str, ...] = (),
        tokens: JwtVerifier | None = None,
    ):
        self.directory = directory
        self.mode = mode
        self.default_destinations = default_destinations
        self.tokens = tokens
        if mode == "trusted-header":
            log.warning(
                "SMSGW_AUTH=trusted-header: every caller may act as any account (x-smsgw-account). "
                "For test harnesses only; never expose this port"
            )

    def grant(self, principal: cr.Principal) -> SendGrant | None:
        """What `principal` may send: from which senders (None: any: a platform service acting for
        an account, e.g. receipt replying from the number it was written to) and to which
        countries. None altogether for a trusted-header harness."""
        if self.mode == "trusted-header":
            return None
        senders = None if cr.ACT_AS_ANY_ACCOUNT in principal.scopes else self.directory.senders(principal.account_id)
        return SendGrant(
            senders,
            self.directory.destinations(principal.account_id, self.default_destinations),
            sender_pool=self.directory.sender_pool(principal.account_id),
            smart_encoding=self.directory.smart_encoding(principal.account_id),
        )

    def principal(self, context: grpc.aio.ServicerContext, scope: int, what: str) -> cr.Principal:
        """The caller, if allowed to do `what` (which needs `scope`); raises the domain error otherwise."""
        metadata = dict(context.invocation_metadata() or ())
        acting_for = metadata.get(ACCOUNT_HEADER)
        if self.mode == "trusted-header":
            account = acting_for or DEFAULT_ACCOUNT
            if not cr.ACCOUNT_ID.match(account):
                raise de.InvalidArgument(
                    f"{ACCOUNT_HEADER}: {account[:64]!r} is not an account id (1-64 letters, digits, '_' or '-')",
                    field=ACCOUNT_HEADER,
                )
            return cr.Principal(account, "trusted-header", _EVERYTHING)
        authorization = metadata.get("authorization")
        scheme, _, credential = (authorization or "").strip().partition(" ")
        credential = credential.strip()
        if self.tokens is not None and scheme.lower() == "bearer" and looks_like_jwt(credential):
            principal = self.tokens.principal(credential, self.directory)
            if acting_for and acting_for != principal.account_id:
                raise de.PermissionDenied(
                    f"{ACCOUNT_HEADER}: a bearer token acts only for the account its claim names "
                    f"({principal.account_id}); drop the header",
                    field=ACCOUNT_HEADER,
                )
        else:
            principal = self.directory.authenticate(authorization, acting_for)
        principal.require(scope, what)
        return principal
