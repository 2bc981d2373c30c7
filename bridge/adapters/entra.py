"""Event Grid's secure webhook delivery: the Entra ID bearer token on each request, checked with
PyJWT (which azure-identity's MSAL already brings).

When the subscription names an Entra app (its `azureActiveDirectoryTenantId` and
`azureActiveDirectoryApplicationIdOrUri`), Event Grid sends `Authorization: Bearer <JWT>` with
every delivery. The token must be signed by one of Entra's published keys (fetched from the JWKS
endpoint, cached, fetched again for a key id not seen yet), be meant for the configured audience
(the app's id or URI), come from the configured issuer (the tenant's token service), and be within
its lifetime (a minute of clock skew allowed). Only RS256 is accepted: an unsigned token or one
signed with a symmetric key is refused whatever it says.
"""

from __future__ import annotations

from typing import Any

from bridge.errors import TransientError

# Entra's signing keys for every tenant, v1 and v2 tokens alike.
ENTRA_JWKS_URL = "https://login.microsoftonline.com/common/discovery/v2.0/keys"
LEEWAY_SECONDS = 60
_ALGORITHMS = ["RS256"]


class EntraBearer:
    """`bridge.webhook.Gate`: refuses a delivery without a valid Entra ID token for this app."""

    def __init__(self, audience: str, issuer: str, jwks_url: str = ENTRA_JWKS_URL) -> None:
        import jwt

        self.audience = audience
        self.issuer = issuer
        self._keys = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=3600, timeout=10)

    def refusal(self, authorization: str | None) -> str | None:
        """Why the request is refused (401), or None. `TransientError` (503: Event Grid retries)
        when Entra's keys cannot be fetched, which says nothing about the token."""
        import jwt

        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "no bearer token (Authorization: Bearer <token>)"
        token = token.strip()
        try:
            key = self._keys.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            raise TransientError(f"Entra ID signing keys cannot be fetched: {exc}") from exc
        except jwt.PyJWKClientError as exc:
            return f"token signed with an unknown key: {exc}"
        except jwt.InvalidTokenError as exc:
            return f"token is not a JWT: {exc}"
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=_ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.InvalidAudienceError:
            return f"token is not for audience {self.audience}"
        except jwt.InvalidIssuerError:
            return f"token is not from issuer {self.issuer}"
        except jwt.ExpiredSignatureError:
            return "token has expired"
        except jwt.InvalidTokenError as exc:
            return f"token is invalid: {exc}"
        return None if claims else "token has no claims"
