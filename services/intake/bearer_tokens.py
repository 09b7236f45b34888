"""JWT bearer tokens (OAuth2 client credentials) as an alternative to API keys.

A customer's identity provider issues the token; intake verifies it against the provider's
public keys in a JWKS file (SMSGW_JWT_JWKS_FILE, re-read when it changes, so keys rotate
without a restart), checks issuer, audience and lifetime, and maps it to an account (a claim,
`smsgw_account` by default, naming an account that exists) and to scopes (the standard
space-separated `scope` claim; `send`, `read` and `admin` are recognised, any other scope of
the provider's is ignored). A token never acts for another account: act-as-any-account is
for the platform's own API keys only.

Only asymmetric algorithms are accepted, from an explicit list: a token saying `none`, or
HS256 with the public key used as an HMAC secret (the classic confusion), is refused.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from smsgw.domain import credentials as cr
from smsgw.domain import errors as de

log = logging.getLogger(__name__)

#: Asymmetric only: the verifier holds public keys, never a shared secret.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
#: Scopes a token may carry into smsgw (act-as-any-account never comes from outside).
TOKEN_SCOPES = {"send": cr.SEND, "read": cr.READ, "admin": cr.ADMIN}


def looks_like_jwt(credential: str) -> bool:
    """API keys are `sgw_...`; a JWS compact token is three base64url parts."""
    return credential.count(".") == 2 and not credential.startswith("sgw_")


@dataclass(frozen=True)
class JwtSettings:
    jwks_file: Path
    issuer: str
    audience: str
    account_claim: str = "smsgw_account"
    leeway_seconds: float = 30.0


class JwtVerifier:
    def __init__(self, settings: JwtSettings, *, clock=time.time, reload_every: float = 5.0) -> None:
        if not settings.issuer or not settings.audience:
            raise ValueError(
                "JWT bearer tokens need both an issuer (SMSGW_JWT_ISSUER) and an audience "
                "(SMSGW_JWT_AUDIENCE): without them a token minted for another service would do"
            )
        self.settings = settings
        self._clock = clock
        self._reload_every = reload_every
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_mtime: float | None = None
        self._checked_at = float("-inf")
        self._load()

    def _load(self) -> None:
        path = self.settings.jwks_file
        mtime = path.stat().st_mtime
        if mtime == self._loaded_mtime:
            return
        keys: dict[str, jwt.PyJWK] = {}
        for entry in json.loads(path.read_text()).get("keys", []):
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError as error:
                log.warning("%s: a key (kid %r) is not usable and is skipped: %s", path, entry.get("kid"), error)
                continue
            if key.algorithm_name not in ALGORITHMS:
                log.warning(
                    "%s: key %r uses %s, not an asymmetric algorithm smsgw accepts; skipped",
                    path,
                    entry.get("kid"),
                    key.algorithm_name,
                )
                continue
            keys[entry.get("kid", "")] = key
        if not keys:
            raise ValueError(
                f'{path}: no usable public key (a JWKS document: {{"keys": [...]}}, RSA, EC or OKP '
                f"keys for {', '.join(ALGORITHMS)})"
            )
        self._keys, self._loaded_mtime = keys, mtime
        log.info("JWKS %s: %d key(s): %s", path, len(keys), ", ".join(sorted(keys)))

    def _current_keys(self) -> dict[str, jwt.PyJWK]:
        now = time.monotonic()
        if now - self._checked_at >= self._reload_every:
            self._checked_at = now
            try:
                self._load()
            except (OSError, ValueError) as error:
                # Keep the keys we have: a half-written file must not lock every client out.
                log.warning(
                    "JWKS %s not reloaded (%s); keeping the %d key(s) loaded before",
                    self.settings.jwks_file,
                    error,
                    len(self._keys),
                )
        return self._keys

    def principal(self, token: str, directory: cr.Directory) -> cr.Principal:
        """The account and scopes the token grants; UNAUTHENTICATED saying why it was refused."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _refused("not a well-formed JWT") from None
        keys = self._current_keys()
        kid = header.get("kid")
        key = keys.get(kid) if kid is not None else (next(iter(keys.values())) if len(keys) == 1 else None)
        if key is None:
            raise _refused(f"signed with a key (kid {str(kid)[:64]!r}) that is not in the JWKS")
        if header.get("alg") != key.algorithm_name:
            raise _refused(f"algorithm {str(header.get('alg'))[:16]!r} does not match its key's")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[key.algorithm_name],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise _refused("expired; get a new token from your identity provider") from None
        except jwt.ImmatureSignatureError:
            raise _refused("not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise _refused(f"its audience is not {self.settings.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise _refused(f"its issuer is not {self.settings.issuer!r}") from None
        except jwt.MissingRequiredClaimError as error:
            raise _refused(f"it has no {error.claim!r} claim") from None
        except jwt.PyJWTError:
            raise _refused("its signature does not verify") from None
        account = claims.get(self.settings.account_claim)
        if not isinstance(account, str) or not cr.ACCOUNT_ID.match(account) or account not in directory.accounts:
            raise _refused(f"its {self.settings.account_claim!r} claim names no account of this platform")
        scope_claim = claims.get("scope", "")
        names = scope_claim.split() if isinstance(scope_claim, str) else []
        scopes = frozenset(TOKEN_SCOPES[name] for name in names if name in TOKEN_SCOPES)
        subject = str(claims.get("client_id") or claims.get("azp") or claims.get("sub") or "?")[:64]
        return cr.Principal(account, f"jwt:{subject}", scopes)


def _refused(why: str) -> de.Unauthenticated:
    return de.Unauthenticated(f"bearer token refused: {why}")
