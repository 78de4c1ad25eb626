"""Bearer-token auth with two scopes: ``submit`` (submit and read tasks) and ``admin``.

Resources declare the scope each method needs in ``scopes`` (None = open). With no
tokens in the manifest auth is off, and the server refuses to bind beyond loopback.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

import falcon

from dtqs.api.errors import ProblemError

if TYPE_CHECKING:
    from dtqs.api.app import ApiState

#: What each scope may do, by the scope a resource asks for.
GRANTS = {"submit": {"submit"}, "admin": {"submit", "admin"}}


class Auth:
    def __init__(self, state: ApiState) -> None:
        self.state = state

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        tokens = self.state.manifest.api.tokens
        if resource is None or not tokens:
            return
        needed = getattr(resource, "scopes", {}).get(req.method, "admin")
        if needed is None:
            return
        header = req.get_header("Authorization") or ""
        scheme, _, given = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="dtqs"'}
        if scheme.lower() != "bearer" or not given.strip():
            raise ProblemError(401, "a bearer token is required", headers=challenge)
        given_b = given.strip().encode()
        scope = None
        for token in tokens:  # NOTE: no early exit, so timing says nothing about which matched
            if hmac.compare_digest(token.token.encode(), given_b):
                scope = token.scope
                req.context.token_name = token.name
        if scope is None:
            raise ProblemError(401, "the bearer token is not valid", headers=challenge)
        if needed not in GRANTS[scope]:
            raise ProblemError(403, f"this needs a token with the {needed!r} scope")
