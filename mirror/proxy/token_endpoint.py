"""`/token`: where clients exchange credentials for a bearer token (the distribution token
flow). `GET` with Basic credentials, or none for an anonymous token; `POST` with the OAuth2
password grant, which containerd tries first."""

from __future__ import annotations

from aiohttp import web

from mirror.access.identity import ANONYMOUS, Identity
from mirror.access.tokens import IssuedToken
from mirror.proxy.access_gate import GATE, authorization, basic_credentials

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def add_token_routes(app: web.Application) -> None:
    app.router.add_get("/token", token_by_get)
    app.router.add_post("/token", token_by_post)


async def token_by_get(request: web.Request) -> web.Response:
    gate = request.app[GATE]
    identity: Identity = ANONYMOUS
    scheme, value = authorization(request)
    # Only a password gets a named token: one token must not buy the next, or removing a
    # user from the htpasswd file would never lock them out.
    if scheme == "basic":
        identity = await gate.login(request, *basic_credentials(value))
    return _token_response(gate.issue(identity, request.query.getall("scope", [])))


async def token_by_post(request: web.Request) -> web.Response:
    gate = request.app[GATE]
    form = await request.post()
    if form.get("grant_type") != "password":
        return _oauth_error("unsupported_grant_type", "only the password grant is supported")
    user, password = form.get("username"), form.get("password")
    if not isinstance(user, str) or not isinstance(password, str):
        return _oauth_error("invalid_request", "username and password are required")
    identity = await gate.login(request, user, password)
    scopes = [scope for scope in form.getall("scope", []) if isinstance(scope, str)]
    return _token_response(gate.issue(identity, scopes))


def _token_response(issued: IssuedToken) -> web.Response:
    body = {
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued.issued_at,
    }
    return web.json_response(body, headers=_NO_STORE)


def _oauth_error(code: str, description: str) -> web.Response:
    return web.json_response({"error": code, "error_description": description}, status=400)
