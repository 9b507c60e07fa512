#!/usr/bin/env python3
"""Conformance checks: the unmodified Symphony Python BDK (symphony-bdk-python 3.0.0) against a
running sessionauth.

Run by scripts/bdk-conformance.sh, which starts the server and writes the two BDK configurations:

    bdk_conformance.py --config bot.yaml --refused-config retired.yaml --admin-config admin.yaml

`bot.yaml` names bot.user (certificate auth) and the app demo-app; `retired.yaml` names the
inactive service user retired.bot; `admin.yaml` names the administrator admin.bot (and demo-app).
Sections 6 to 9 (bdk_revocation.py, shared with the RSA mode) are the pod's session
administration through the generated `UsersApi` (list a user's sessions, end one by id, end
all) and the app-logout cascade to the on-behalf-of sessions an app session minted. Everything goes through the BDK's public API, as a bot
developer would write it. The only lower-level pieces are the BDK's own generated clients
(`CertificateAuthenticationApi`, `SessionApi`), driven with the ApiClients the BDK built itself,
which the BDK hands out through its documented extension mechanism (`BdkApiClientFactoryAware`).

Prints a `-- N. title` line before each numbered section, one PASS/FAIL line per check and, last, a line `N passed, M failed`. Exits 1 if any check
failed. Every step has a timeout, and so does the whole run, so that it can never hang. Tokens are
never printed.
"""

import argparse
import asyncio
import logging
import sys
import time
import traceback

from symphony.bdk.core.auth.exception import AuthUnauthorizedError
from symphony.bdk.core.client.api_client_factory import ApiClientFactory
from symphony.bdk.core.config.loader import BdkConfigLoader
from symphony.bdk.core.extension import BdkApiClientFactoryAware
from symphony.bdk.core.symphony_bdk import SymphonyBdk
from symphony.bdk.gen.auth_api.certificate_authentication_api import CertificateAuthenticationApi
from symphony.bdk.gen.exceptions import ApiException
from symphony.bdk.gen.pod_api.session_api import SessionApi
from symphony.bdk.gen.pod_model.user_v2 import UserV2

from bdk_revocation import revocation_checks

BOT_USERNAME = "bot.user"
BOT_ID = 1001
OBO_USERNAME = "alice"
OBO_ID = 2001
# bob exists but did not install demo-app: an OBO session for him must be refused with 403.
OBO_NOT_INSTALLED_USERNAME = "bob"

STEP_TIMEOUT_S = 15.0
RUN_TIMEOUT_S = 150.0
# Fast enough to prove the BDK gave up at once instead of retrying with backoff (its default
# retry policy waits 0.5 s, 1 s, 2 s, ... between attempts).
NO_RETRY_BUDGET_S = 3.0


class Results:
    """Counts checks and prints one line per check."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, name: str, detail: str = "") -> None:
        self.passed += 1
        print(f"PASS: {name}" + (f" ({detail})" if detail else ""), flush=True)

    def fail(self, name: str, detail: str) -> None:
        self.failed += 1
        print(f"FAIL: {name}: {detail}", flush=True)

    def check(self, name: str, condition: bool, detail: str) -> bool:
        """PASS when `condition` holds; otherwise FAIL with `detail` (which says what was seen)."""
        if condition:
            self.ok(name)
        else:
            self.fail(name, detail)
        return condition


class ClientsExtension(BdkApiClientFactoryAware):
    """A BDK extension whose only purpose is to receive the BDK's own ApiClientFactory.

    The BDK documents extensions as the way to reach its configured ApiClients
    (`bdk.extensions().register(...)` injects the factory into any `BdkApiClientFactoryAware`).
    SymphonyBdk has no other public accessor for them. We use the factory's public getters only:
    the pod client, the session-auth client (bot certificate) and the app session-auth client
    (app certificate).
    """

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


async def expect_status(r: Results, name: str, coro, status: int) -> None:
    """PASS when awaiting `coro` raises the generated client's ApiException with `status`."""
    try:
        await step(coro)
    except ApiException as exc:
        r.check(name, exc.status == status, f"expected HTTP {status}, got {describe(exc)}")
    except Exception as exc:  # noqa: BLE001 - every other outcome is a FAIL with its description
        r.fail(name, f"expected ApiException {status}, got {describe(exc)}")
    else:
        r.fail(name, f"expected HTTP {status}, the call succeeded")


def section(number: int, title: str) -> None:
    """The heading of a numbered section of checks."""
    print(f"-- {number}. {title}", flush=True)


def is_user(user, user_id: int, username: str) -> bool:
    return isinstance(user, UserV2) and user.id == user_id and user.username == username


def user_detail(user) -> str:
    if isinstance(user, UserV2):
        return f"got UserV2 id={user.id} username={user.username!r}"
    return f"got {type(user).__name__}"


async def bot_checks(r: Results, config_path: str) -> None:
    config = BdkConfigLoader.load_from_file(config_path)
    async with SymphonyBdk(config) as bdk:
        clients = ClientsExtension()
        bdk.extensions().register(clients)
        factory = clients.factory
        if not r.check("BDK injects its ApiClientFactory into an extension", factory is not None,
                       "set_api_client_factory was not called"):
            return
        session_api = SessionApi(factory.get_pod_client())
        bot_auth_api = CertificateAuthenticationApi(factory.get_session_auth_client())
        app_auth_api = CertificateAuthenticationApi(factory.get_app_session_auth_client())

        # 1. Bot session: POST /sessionauth/v1/authenticate and POST /keyauth/v1/authenticate.
        section(1, "bot session and key-manager token")
        bot_token = None
        try:
            bot_token = await step(bdk.bot_session().session_token)
            r.check("bot_session().session_token is a non-empty str",
                    isinstance(bot_token, str) and bot_token != "",
                    f"got {type(bot_token).__name__} of length {len(bot_token or '')}")
        except Exception as exc:  # noqa: BLE001
            r.fail("bot_session().session_token is a non-empty str", describe(exc))
        try:
            km_token = await step(bdk.bot_session().key_manager_token)
            r.check("bot_session().key_manager_token is a non-empty str, not the session token",
                    isinstance(km_token, str) and km_token != "" and km_token != bot_token,
                    f"got {type(km_token).__name__} of length {len(km_token or '')}, "
                    f"equal to the session token: {km_token == bot_token}")
        except Exception as exc:  # noqa: BLE001
            r.fail("bot_session().key_manager_token is a non-empty str", describe(exc))

        # 2. Session info through the BDK's SessionService: GET /pod/v2/sessioninfo.
        section(2, "session info")
        try:
            me = await step(bdk.sessions().get_session())
            r.check(f"sessions().get_session() is {BOT_USERNAME} ({BOT_ID})",
                    is_user(me, BOT_ID, BOT_USERNAME), user_detail(me))
        except Exception as exc:  # noqa: BLE001
            r.fail(f"sessions().get_session() is {BOT_USERNAME} ({BOT_ID})", describe(exc))

        # 3. On-behalf-of sessions: app authenticate, then the OBO path by user id and by username.
        section(3, "on-behalf-of sessions")
        obo_tokens = {}
        for label, obo_session in (
            (f"obo(user_id={OBO_ID})", bdk.obo(user_id=OBO_ID)),
            (f"obo(username={OBO_USERNAME!r})", bdk.obo(username=OBO_USERNAME)),
        ):
            try:
                token = await step(obo_session.session_token)
            except Exception as exc:  # noqa: BLE001
                r.fail(f"{label}.session_token", describe(exc))
                continue
            if not r.check(f"{label}.session_token is a non-empty str, not the bot's",
                           isinstance(token, str) and token != "" and token != bot_token,
                           f"got {type(token).__name__} of length {len(token or '')}"):
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
            r.check("the two OBO sessions are distinct", a != b, "both calls returned one token")

        # A refusal on the OBO path: bob did not install demo-app. The BDK does not retry a 403.
        await expect_status(r, f"obo(username={OBO_NOT_INSTALLED_USERNAME!r}) is refused with 403",
                            bdk.obo(username=OBO_NOT_INSTALLED_USERNAME).session_token, 403)

        # 4. Logout through the BDK's generated authenticator client, with the bot's certificate.
        section(4, "logout")
        if bot_token:
            try:
                resp = await step(bot_auth_api.v1_logout_post(session_token=bot_token))
                message = getattr(resp, "message", None)
                r.check("bot logout (CertificateAuthenticationApi.v1_logout_post) succeeds",
                        isinstance(message, str) and message != "",
                        f"got {type(resp).__name__} with message {message!r}")
            except Exception as exc:  # noqa: BLE001
                r.fail("bot logout (CertificateAuthenticationApi.v1_logout_post) succeeds",
                       describe(exc))
            # Raw generated client on purpose: bdk.sessions().get_session() would re-authenticate
            # on 401 and hide it.
            await expect_status(r, "logged-out bot token gets 401 on /pod/v2/sessioninfo",
                                session_api.v2_sessioninfo_get(session_token=bot_token), 401)
            await expect_status(r, "logging out the same bot token again gets 401",
                                bot_auth_api.v1_logout_post(session_token=bot_token), 401)
            # What a bot sees: the BDK's SessionService meets the 401, re-authenticates and
            # carries on with a fresh session.
            try:
                me = await step(bdk.sessions().get_session())
                fresh = await step(bdk.bot_session().session_token)
                r.check("BDK recovers from the logged-out session by re-authenticating",
                        is_user(me, BOT_ID, BOT_USERNAME) and fresh != bot_token,
                        f"{user_detail(me)}, new token differs: {fresh != bot_token}")
            except Exception as exc:  # noqa: BLE001
                r.fail("BDK recovers from the logged-out session by re-authenticating",
                       describe(exc))

        # Logout of an OBO session through the app's session-auth client (the app certificate).
        if len(obo_tokens) == 2:
            by_id, by_name = obo_tokens.values()
            try:
                resp = await step(app_auth_api.v1_logout_post(session_token=by_id))
                message = getattr(resp, "message", None)
                r.check("app logs out the OBO session it minted",
                        isinstance(message, str) and message != "",
                        f"got {type(resp).__name__} with message {message!r}")
            except Exception as exc:  # noqa: BLE001
                r.fail("app logs out the OBO session it minted", describe(exc))
            await expect_status(r, "logged-out OBO token gets 401 on /pod/v2/sessioninfo",
                                session_api.v2_sessioninfo_get(session_token=by_id), 401)
            try:
                user = await step(session_api.v2_sessioninfo_get(session_token=by_name))
                r.check("the other OBO session is still alive",
                        is_user(user, OBO_ID, OBO_USERNAME), user_detail(user))
            except Exception as exc:  # noqa: BLE001
                r.fail("the other OBO session is still alive", describe(exc))
            # The bot's certificate does not own the app's OBO session.
            await expect_status(r, "bot certificate cannot log out the app's OBO session (403)",
                                bot_auth_api.v1_logout_post(session_token=by_name), 403)


async def refused_checks(r: Results, config_path: str) -> None:
    """5. An inactive service user: the BDK must fail at once with its documented behaviour.

    BotAuthenticatorCert retries with `authentication_retry`: 5xx/429 are retried, 401 becomes
    AuthUnauthorizedError, and any other status is re-raised as the generated ApiException. The
    server answers 403 for an inactive user, so the BDK raises ApiException(403) (its subclass
    ForbiddenException) after a single attempt.
    """
    section(5, "an inactive service user")
    name = "inactive retired.bot: bot_session().session_token raises ApiException 403 at once"
    config = BdkConfigLoader.load_from_file(config_path)
    async with SymphonyBdk(config) as bdk:
        started = time.monotonic()
        try:
            await step(bdk.bot_session().session_token)
        except ApiException as exc:
            elapsed = time.monotonic() - started
            r.check(name,
                    exc.status == 403 and elapsed < NO_RETRY_BUDGET_S
                    and "not allowed" in (exc.body or ""),
                    f"{describe(exc)} after {elapsed:.1f}s")
        except Exception as exc:  # noqa: BLE001
            r.fail(name, f"raised {describe(exc)} after {time.monotonic() - started:.1f}s")
        else:
            r.fail(name, "authentication succeeded")


async def run(r: Results, args) -> None:
    await bot_checks(r, args.config)
    await refused_checks(r, args.refused_config)
    # 6. to 9.: session administration and the app-logout cascade (bdk_revocation.py).
    await revocation_checks(r, mode="cert", first_section=6,
                            admin_config=BdkConfigLoader.load_from_file(args.admin_config),
                            bot_config=BdkConfigLoader.load_from_file(args.config),
                            timeout_s=STEP_TIMEOUT_S)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="BDK YAML for bot.user and demo-app")
    parser.add_argument("--refused-config", required=True, help="BDK YAML for retired.bot")
    parser.add_argument("--admin-config", required=True,
                        help="BDK YAML for the administrator admin.bot and demo-app")
    args = parser.parse_args()
    # The BDK logs retries at INFO; only warnings and errors are of interest here.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    r = Results()
    try:
        asyncio.run(asyncio.wait_for(run(r, args), RUN_TIMEOUT_S))
    except asyncio.TimeoutError:
        r.fail("the whole run", f"took longer than {RUN_TIMEOUT_S:.0f}s")
    except Exception as exc:  # noqa: BLE001 - an unexpected crash is one more failure
        traceback.print_exc()
        r.fail("unexpected error", describe(exc))
    print(f"{r.passed} passed, {r.failed} failed", flush=True)
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
