#!/usr/bin/env python3
"""Conformance checks in RSA mode: the unmodified Symphony Python BDK (symphony-bdk-python
3.0.0) with `bot.privateKey` and `app.privateKey` against a running sessionauth.

    bdk_conformance_rsa.py --port PORT --certs CERTS_DIR --ca CA_PEM

The server must know the RSA public keys of bot.user, retired.bot, admin.bot and demo-app (for
example the dev PKI's `certs init` files, with `public_key_dir` pointing at CERTS_DIR). The BDK signs its own
JWTs with CERTS_DIR/<name>-rsa.pem and calls /login and /relay: session and key-manager tokens,
session info, on-behalf-of sessions by user id and by username, refusals (an inactive bot, a user
who did not install the app), the extension-app flow with the pod certificate, and an access
token from /login/idm/tokens verified (with PyJWT, as a resource server would) against the JWKS
of /login/idm/keys. Sections 7 to 10 (bdk_revocation.py, shared with the certificate mode): the
administrator admin.bot, by RSA key, lists bot.user's sessions through the generated `UsersApi`,
ends one by id and then all; and logging out an app session (minted by RSA; logged out with the
app's dev-PKI certificate CERTS_DIR/demo-app.bundle.pem, as the contract has no RSA logout)
ends the on-behalf-of sessions it minted. The lower-level calls use the BDK's own generated
clients, driven with the ApiClients the BDK built itself (reached through its documented
extension mechanism).

Prints a `-- N. title` line before each numbered section, one PASS/FAIL line per check and, last, `N passed, M failed`. Exits 1 if any check failed.
Every step has a timeout, and so does the whole run. Tokens are never printed.
"""

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import traceback

import jwt as pyjwt
from symphony.bdk.core.auth.exception import AuthUnauthorizedError
from symphony.bdk.core.client.api_client_factory import ApiClientFactory
from symphony.bdk.core.config.loader import BdkConfigLoader
from symphony.bdk.core.extension import BdkApiClientFactoryAware
from symphony.bdk.core.symphony_bdk import SymphonyBdk
from symphony.bdk.gen.exceptions import ApiException
from symphony.bdk.gen.login_api.authentication_api import AuthenticationApi
from symphony.bdk.gen.pod_api.pod_api import PodApi
from symphony.bdk.gen.pod_api.session_api import SessionApi
from symphony.bdk.gen.pod_model.user_v2 import UserV2

from bdk_revocation import ADMIN_USERNAME, revocation_checks

BOT_USERNAME = "bot.user"
BOT_ID = 1001
RETIRED_BOT = "retired.bot"
APP_ID = "demo-app"
OBO_USERNAME = "alice"
OBO_ID = 2001
# bob exists but did not install demo-app: an OBO session for him must be refused with 403.
OBO_NOT_INSTALLED_USERNAME = "bob"
ISSUER = "sessionauth"

STEP_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 240.0
# Fast enough to prove the BDK gave up at once instead of retrying with backoff.
NO_RETRY_BUDGET_S = 3.0


class Results:
    """Counts checks and prints one line per check."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, name: str) -> None:
        self.passed += 1
        print(f"PASS: {name}", flush=True)

    def fail(self, name: str, detail: str) -> None:
        self.failed += 1
        print(f"FAIL: {name}: {detail}", flush=True)

    def check(self, name: str, condition: bool, detail: str) -> bool:
        """PASS when `condition` holds; otherwise FAIL with `detail` (what was seen)."""
        if condition:
            self.ok(name)
        else:
            self.fail(name, detail)
        return condition


class ClientsExtension(BdkApiClientFactoryAware):
    """A BDK extension whose only purpose is to receive the BDK's own ApiClientFactory
    (`bdk.extensions().register(...)` injects it into any `BdkApiClientFactoryAware`)."""

    def __init__(self):
        self.factory: ApiClientFactory | None = None

    def set_api_client_factory(self, api_client_factory: ApiClientFactory):
        self.factory = api_client_factory


def describe(exc: BaseException) -> str:
    """A one-line description of an exception, without tokens (error bodies carry none)."""
    if isinstance(exc, ApiException):
        body = (exc.body or "").strip().replace("\n", " ")
        return f"{type(exc).__name__} status={exc.status} body={body[:200]!r}"
    if isinstance(exc, AuthUnauthorizedError):
        cause = describe(exc.cause) if exc.cause else None
        return f"AuthUnauthorizedError({exc.message!r}, cause={cause})"
    if isinstance(exc, asyncio.TimeoutError):
        return f"timed out after {STEP_TIMEOUT_S:.0f}s"
    return f"{type(exc).__name__}: {exc}"


async def step(coro):
    """Awaits one BDK call with a bounded time."""
    return await asyncio.wait_for(coro, STEP_TIMEOUT_S)


def bdk_config(port: int, ca: str, username: str, key: str, app_key: str):
    """A BDK configuration in RSA mode: `bot.privateKey` and `app.privateKey`, no certificate."""
    content = f"""
host: localhost
port: {port}
ssl:
  trustStore:
    path: {json.dumps(ca)}
bot:
  username: {json.dumps(username)}
  privateKey:
    path: {json.dumps(key)}
app:
  appId: {json.dumps(APP_ID)}
  privateKey:
    path: {json.dumps(app_key)}
"""
    return BdkConfigLoader.load_from_content(content)


def app_cert_config(port: int, ca: str, bundle: str):
    """A BDK configuration whose app (demo-app) authenticates with its certificate: the RSA
    mode's app sessions are logged out on the certificate endpoint (there is no RSA logout)."""
    content = f"""
host: localhost
port: {port}
ssl:
  trustStore:
    path: {json.dumps(ca)}
app:
  appId: {json.dumps(APP_ID)}
  certificate:
    path: {json.dumps(bundle)}
"""
    return BdkConfigLoader.load_from_content(content)


def section(number: int, title: str) -> None:
    """The heading of a numbered section of checks."""
    print(f"-- {number}. {title}", flush=True)


def is_user(user, user_id: int, username: str) -> bool:
    return isinstance(user, UserV2) and user.id == user_id and user.username == username


def user_detail(user) -> str:
    if isinstance(user, UserV2):
        return f"got UserV2 id={user.id} username={user.username!r}"
    return f"got {type(user).__name__}"


async def bot_checks(r: Results, config) -> None:
    async with SymphonyBdk(config) as bdk:
        clients = ClientsExtension()
        bdk.extensions().register(clients)
        factory = clients.factory
        if not r.check("BDK injects its ApiClientFactory into an extension", factory is not None,
                       "set_api_client_factory was not called"):
            return
        session_api = SessionApi(factory.get_pod_client())
        login_api = AuthenticationApi(factory.get_login_client())

        # 1. POST /login/pubkey/authenticate and POST /relay/pubkey/authenticate.
        section(1, "RSA bot session and key-manager token")
        bot_token = None
        try:
            bot_token = await step(bdk.bot_session().session_token)
            r.check("RSA bot_session().session_token is a non-empty str",
                    isinstance(bot_token, str) and bot_token != "",
                    f"got {type(bot_token).__name__}")
        except Exception as exc:  # noqa: BLE001 - every outcome is a PASS or a FAIL line
            r.fail("RSA bot_session().session_token is a non-empty str", describe(exc))
        try:
            km_token = await step(bdk.bot_session().key_manager_token)
            r.check("RSA bot_session().key_manager_token is a non-empty str, not the session token",
                    isinstance(km_token, str) and km_token != "" and km_token != bot_token,
                    f"got {type(km_token).__name__}, equal to the session token: {km_token == bot_token}")
        except Exception as exc:  # noqa: BLE001
            r.fail("RSA bot_session().key_manager_token is a non-empty str", describe(exc))

        # 2. GET /pod/v2/sessioninfo through the BDK's SessionService.
        section(2, "session info")
        try:
            me = await step(bdk.sessions().get_session())
            r.check(f"sessions().get_session() is {BOT_USERNAME} ({BOT_ID})",
                    is_user(me, BOT_ID, BOT_USERNAME), user_detail(me))
        except Exception as exc:  # noqa: BLE001
            r.fail(f"sessions().get_session() is {BOT_USERNAME} ({BOT_ID})", describe(exc))

        # 3. OBO: POST /login/pubkey/app/authenticate, then the OBO path by id and by username.
        section(3, "RSA on-behalf-of sessions")
        obo_tokens = {}
        for label, obo_session in (
            (f"RSA obo(user_id={OBO_ID})", bdk.obo(user_id=OBO_ID)),
            (f"RSA obo(username={OBO_USERNAME!r})", bdk.obo(username=OBO_USERNAME)),
        ):
            try:
                token = await step(obo_session.session_token)
            except Exception as exc:  # noqa: BLE001
                r.fail(f"{label}.session_token", describe(exc))
                continue
            if not r.check(f"{label}.session_token is a non-empty str, not the bot's",
                           isinstance(token, str) and token != "" and token != bot_token,
                           f"got {type(token).__name__}"):
                continue
            obo_tokens[label] = token
            try:
                user = await step(session_api.v2_sessioninfo_get(session_token=token))
                r.check(f"{label} session belongs to {OBO_USERNAME} ({OBO_ID})",
                        is_user(user, OBO_ID, OBO_USERNAME), user_detail(user))
            except Exception as exc:  # noqa: BLE001
                r.fail(f"{label} session belongs to {OBO_USERNAME} ({OBO_ID})", describe(exc))
        if len(obo_tokens) == 2:
            a, b = obo_tokens.values()
            r.check("the two RSA OBO sessions are distinct", a != b, "both calls returned one token")

        # A refusal on the RSA OBO path: bob did not install demo-app. The BDK does not retry 403.
        name = f"RSA obo(username={OBO_NOT_INSTALLED_USERNAME!r}) is refused with 403, without retries"
        started = time.monotonic()
        try:
            await step(bdk.obo(username=OBO_NOT_INSTALLED_USERNAME).session_token)
            r.fail(name, "the call succeeded")
        except ApiException as exc:
            elapsed = time.monotonic() - started
            r.check(name, exc.status == 403 and elapsed < NO_RETRY_BUDGET_S,
                    f"{describe(exc)} after {elapsed:.1f}s")
        except Exception as exc:  # noqa: BLE001
            r.fail(name, describe(exc))

        # 4. Extension app (circle of trust) by RSA, and the pod certificate.
        section(4, "RSA extension app and the pod certificate")
        try:
            app_session = await step(bdk.app_authenticator().authenticate_extension_app("conformance-app-token"))
            r.check("RSA extension app: appToken echoed, symphonyToken and integer expireAt (ms) returned",
                    app_session.app_token == "conformance-app-token"
                    and isinstance(app_session.symphony_token, str) and app_session.symphony_token != ""
                    and isinstance(app_session.expire_at, int)
                    and app_session.expire_at > time.time() * 1000,
                    f"appToken echoed: {app_session.app_token == 'conformance-app-token'}, "
                    f"expireAt={app_session.expire_at!r}")
            valid = await step(bdk.app_authenticator().is_token_pair_valid(
                "conformance-app-token", app_session.symphony_token))
            r.check("the BDK's is_token_pair_valid accepts the pair", valid is True, f"got {valid!r}")
        except Exception as exc:  # noqa: BLE001
            r.fail("RSA extension app authentication", describe(exc))
        try:
            cert = await step(PodApi(factory.get_pod_client()).v1_podcert_get())
            pem = getattr(cert, "certificate", None) or ""
            r.check("GET /pod/v1/podcert returns a PEM certificate",
                    pem.startswith("-----BEGIN CERTIFICATE-----"), f"got {pem[:40]!r}")
        except Exception as exc:  # noqa: BLE001
            r.fail("GET /pod/v1/podcert returns a PEM certificate", describe(exc))

        # 5. An access token for resource servers, verified against the JWKS.
        section(5, "access token and JWKS")
        if bot_token:
            try:
                issued = await step(login_api.idm_tokens_post(session_token=bot_token, scope="demo"))
                keys = await step(login_api.idm_keys_get())
                header = pyjwt.get_unverified_header(issued.access_token)
                jwk = next((k for k in keys.keys if k.get("kid") == header.get("kid")), None)
                if not r.check("/login/idm/tokens names a kid that /login/idm/keys publishes",
                               issued.token_type == "Bearer" and jwk is not None,
                               f"token_type={issued.token_type!r}, kid found: {jwk is not None}"):
                    return
                claims = pyjwt.decode(issued.access_token, pyjwt.PyJWK(jwk).key,
                                      algorithms=["RS256"], issuer=ISSUER)
                r.check("the access token verifies with PyJWT and carries the bot's id and the scope",
                        claims.get("sub") == str(BOT_ID) and claims.get("username") == BOT_USERNAME
                        and claims.get("scope") == "demo"
                        and 0 < issued.expires_in <= 300,
                        f"sub={claims.get('sub')!r} username={claims.get('username')!r} "
                        f"scope={claims.get('scope')!r} expires_in={issued.expires_in!r}")
            except Exception as exc:  # noqa: BLE001
                r.fail("access token from /login/idm/tokens", describe(exc))


async def refused_checks(r: Results, config) -> None:
    """An inactive service user with a registered key: 401, which the BDK reports at once."""
    section(6, "an inactive service user")
    name = f"RSA bot_session() of the inactive {RETIRED_BOT} raises AuthUnauthorizedError at once"
    async with SymphonyBdk(config) as bdk:
        started = time.monotonic()
        try:
            await step(bdk.bot_session().session_token)
            r.fail(name, "the call succeeded")
        except AuthUnauthorizedError as exc:
            elapsed = time.monotonic() - started
            status = getattr(exc.cause, "status", None)
            r.check(name, status == 401 and elapsed < NO_RETRY_BUDGET_S,
                    f"cause status={status} after {elapsed:.1f}s")
        except Exception as exc:  # noqa: BLE001
            r.fail(name, describe(exc))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the server's HTTPS port")
    parser.add_argument("--certs", required=True, help="folder with <name>-rsa.pem private keys")
    parser.add_argument("--ca", required=True, help="PEM of the CA that signed the server certificate")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    certs = os.path.abspath(args.certs)
    ca = os.path.abspath(args.ca)
    key = lambda name: os.path.join(certs, f"{name}-rsa.pem")  # noqa: E731
    app_bundle = os.path.join(certs, f"{APP_ID}.bundle.pem")
    for path in [key(name) for name in (BOT_USERNAME, RETIRED_BOT, ADMIN_USERNAME, APP_ID)] + [app_bundle]:
        if not os.path.isfile(path):
            print(f"FAIL: setup: {path} does not exist", flush=True)
            print("0 passed, 1 failed")
            return 1
    r = Results()
    try:
        await asyncio.wait_for(
            bot_checks(r, bdk_config(args.port, ca, BOT_USERNAME, key(BOT_USERNAME), key(APP_ID))),
            RUN_TIMEOUT_S)
        await asyncio.wait_for(
            refused_checks(r, bdk_config(args.port, ca, RETIRED_BOT, key(RETIRED_BOT), key(APP_ID))),
            RUN_TIMEOUT_S)
        # 7. to 10.: session administration and the app-logout cascade (bdk_revocation.py).
        await asyncio.wait_for(
            revocation_checks(
                r, mode="rsa", first_section=7,
                admin_config=bdk_config(args.port, ca, ADMIN_USERNAME, key(ADMIN_USERNAME), key(APP_ID)),
                bot_config=bdk_config(args.port, ca, BOT_USERNAME, key(BOT_USERNAME), key(APP_ID)),
                app_cert_config=app_cert_config(args.port, ca, app_bundle),
                timeout_s=STEP_TIMEOUT_S),
            RUN_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - an unexpected crash is a failure, with its trace
        traceback.print_exc()
        r.fail("conformance run", describe(exc))
    print(f"{r.passed} passed, {r.failed} failed", flush=True)
    return 0 if r.failed == 0 and r.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
