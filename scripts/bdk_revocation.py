"""Revocation checks shared by bdk_conformance.py (certificate mode) and bdk_conformance_rsa.py
(RSA mode): the pod's session administration and the app-logout cascade, through the unmodified
Symphony Python BDK (symphony-bdk-python 3.0.0).

Not a script: both conformance scripts import it (it sits beside them, on their sys.path) and
call `revocation_checks(...)` after their own checks, with BDK configurations of their own mode:

- `admin_config`: the administrator admin.bot (SUPER_ADMINISTRATOR in the sample directory) as
  the bot, by certificate or by RSA key;
- `bot_config`: bot.user as the bot and demo-app as the app, same mode;
- `app_cert_config` (RSA mode only): demo-app with the certificate the dev PKI made for it. The
  contract has no RSA logout, so an app session minted by RSA is logged out on the certificate
  endpoint `POST /sessionauth/v1/logout` with the app's certificate (in certificate mode the
  bot_config's app client already carries that certificate).

What is checked (numbered sections, continuing the caller's):

A. Listing: admin.bot's session lists bot.user's sessions with the generated
   `UsersApi.v1_users_uid_sessions_get` (GET /pod/v1/users/{uid}/sessions), which parses the
   answer into the strict `V1UserSessions`/`V1Session` models: every `sessionId` must be a str
   (the model refuses a number). Three fresh bot.user sessions, minted one at a time by the
   BDK's own bot authenticator, each show up under exactly one new id. The raw body carries no
   token, and a session without an administrator role is refused (403).
B. End one: `UsersApi.v1_users_uid_sessions_sid_logout_post` (POST .../sessions/{sid}/logout)
   ends the first; its token is then 401 on GET /pod/v2/sessioninfo, the other two still work,
   and ending the same id again is 404.
C. End all: `UsersApi.v1_users_uid_sessions_logout_post` (POST .../sessions/logout); the
   remaining tokens are 401, the listing is empty, the administrator's own session lives on.
D. App-logout cascade: the app authenticates and mints two OBO sessions for alice (by id and by
   username) with the generated calls the BDK's `obo()` makes, keeping the app session token
   (`obo()` itself never hands it out); the BDK's own `obo(user_id=...)` and
   `obo(username=...)` sessions are minted beside them (with app sessions of their own). The
   app session is logged out with the app certificate on POST /sessionauth/v1/logout: both OBO
   sessions it minted are then 401, while the BDK's `obo()` sessions (minted by other app
   sessions) still work. Then the administrator path POST /pod/v1/apps/{appId}/sessions/logout
   (beyond Symphony, so not in the generated client: sent with the BDK's own pod ApiClient) ends
   every demo-app session and, by cascade, the BDK's `obo()` sessions: 401. A new `obo()` still
   works afterwards (sessions were revoked, not the app).

Every step is bounded by a timeout; tokens are never printed.
"""

import asyncio
from contextlib import AsyncExitStack

from symphony.bdk.core.auth.authenticator_factory import AuthenticatorFactory
from symphony.bdk.core.auth.exception import AuthUnauthorizedError
from symphony.bdk.core.auth.jwt_helper import create_signed_jwt
from symphony.bdk.core.client.api_client_factory import ApiClientFactory
from symphony.bdk.core.extension import BdkApiClientFactoryAware
from symphony.bdk.core.symphony_bdk import SymphonyBdk
from symphony.bdk.gen.auth_api.certificate_authentication_api import CertificateAuthenticationApi
from symphony.bdk.gen.exceptions import ApiException
from symphony.bdk.gen.login_api.authentication_api import AuthenticationApi
from symphony.bdk.gen.login_model.authenticate_request import AuthenticateRequest
from symphony.bdk.gen.pod_api.session_api import SessionApi
from symphony.bdk.gen.pod_api.users_api import UsersApi
from symphony.bdk.gen.pod_model.success_response import SuccessResponse
from symphony.bdk.gen.pod_model.user_v2 import UserV2
from symphony.bdk.gen.pod_model.v1_user_sessions import V1UserSessions

ADMIN_USERNAME = "admin.bot"
ADMIN_ID = 1003
ADMIN_ROLE = "SUPER_ADMINISTRATOR"
BOT_USERNAME = "bot.user"
BOT_ID = 1001
APP_ID = "demo-app"
OBO_USERNAME = "alice"
OBO_ID = 2001
# How many fresh bot.user sessions the listing and ending checks work on.
MINTED = 3


class _FactoryExtension(BdkApiClientFactoryAware):
    """Receives the BDK's own ApiClientFactory (the BDK's documented extension mechanism)."""

    def __init__(self):
        self.factory: ApiClientFactory | None = None

    def set_api_client_factory(self, api_client_factory: ApiClientFactory):
        self.factory = api_client_factory


def _factory(bdk: SymphonyBdk) -> ApiClientFactory:
    ext = _FactoryExtension()
    bdk.extensions().register(ext)
    if ext.factory is None:
        raise RuntimeError("the BDK did not inject its ApiClientFactory into the extension")
    return ext.factory


def is_user(user, user_id: int, username: str) -> bool:
    return isinstance(user, UserV2) and user.id == user_id and user.username == username


def user_detail(user) -> str:
    if isinstance(user, UserV2):
        return f"got UserV2 id={user.id} username={user.username!r}"
    return f"got {type(user).__name__}"


def is_text_success(resp) -> bool:
    return (isinstance(resp, SuccessResponse) and resp.format == "TEXT"
            and isinstance(resp.message, str) and resp.message != "")


def success_detail(resp) -> str:
    if isinstance(resp, SuccessResponse):
        return f"got SuccessResponse format={resp.format!r} message={resp.message!r}"
    return f"got {type(resp).__name__}"


class _Checks:
    """The shared step helpers, bound to the caller's Results and timeout."""

    def __init__(self, r, timeout_s: float, prefix: str):
        self.r = r
        self.timeout_s = timeout_s
        self.p = prefix

    def describe(self, exc: BaseException) -> str:
        if isinstance(exc, ApiException):
            body = (exc.body or "").strip().replace("\n", " ")
            return f"{type(exc).__name__} status={exc.status} body={body[:200]!r}"
        if isinstance(exc, AuthUnauthorizedError):
            cause = self.describe(exc.cause) if exc.cause else None
            return f"AuthUnauthorizedError({exc.message!r}, cause={cause})"
        if isinstance(exc, asyncio.TimeoutError):
            return f"timed out after {self.timeout_s:.0f}s"
        return f"{type(exc).__name__}: {exc}"

    async def step(self, coro):
        return await asyncio.wait_for(coro, self.timeout_s)

    async def status(self, name: str, coro, status: int) -> bool:
        """PASS when awaiting `coro` raises the generated client's ApiException with `status`."""
        try:
            await self.step(coro)
        except ApiException as exc:
            return self.r.check(name, exc.status == status,
                                f"expected HTTP {status}, got {self.describe(exc)}")
        except Exception as exc:  # noqa: BLE001 - every other outcome is a FAIL
            self.r.fail(name, f"expected ApiException {status}, got {self.describe(exc)}")
            return False
        self.r.fail(name, f"expected HTTP {status}, the call succeeded")
        return False

    async def is_alive_as(self, name: str, session_api: SessionApi, token: str,
                          user_id: int, username: str) -> bool:
        """PASS when GET /pod/v2/sessioninfo with `token` names the user."""
        try:
            user = await self.step(session_api.v2_sessioninfo_get(session_token=token))
            return self.r.check(name, is_user(user, user_id, username), user_detail(user))
        except Exception as exc:  # noqa: BLE001
            self.r.fail(name, self.describe(exc))
            return False

    async def is_dead(self, name: str, session_api: SessionApi, token: str) -> bool:
        """PASS when GET /pod/v2/sessioninfo with `token` is 401. The raw generated client on
        purpose: the BDK's SessionService would re-authenticate on a 401 and hide it."""
        return await self.status(name, session_api.v2_sessioninfo_get(session_token=token), 401)

    def section(self, number: int, title: str) -> None:
        print(f"-- {number}. {self.p}{title}", flush=True)


async def _admin_logout_app(pod_client, admin_token: str, app_id: str):
    """POST /pod/v1/apps/{appId}/sessions/logout with the BDK's own pod ApiClient: the
    generated client has no such call (it is beyond Symphony's pod API)."""
    params = pod_client.param_serialize(
        method="POST",
        resource_path="/v1/apps/{appId}/sessions/logout",
        path_params={"appId": app_id},
        header_params={"sessionToken": admin_token, "Accept": "application/json"},
    )
    response = await pod_client.call_api(*params)
    await response.read()
    return pod_client.response_deserialize(
        response_data=response, response_types_map={"200": SuccessResponse}).data


async def revocation_checks(r, *, mode: str, first_section: int, admin_config, bot_config,
                            app_cert_config=None, timeout_s: float) -> None:
    """Sections A to D of the module docstring, numbered from `first_section`.

    `mode`: "cert" or "rsa". In RSA mode `app_cert_config` must name demo-app's certificate.
    """
    if mode not in ("cert", "rsa"):
        raise ValueError(f"mode {mode!r}")
    if mode == "rsa" and app_cert_config is None:
        raise ValueError("RSA mode needs app_cert_config (the app's certificate, for its logout)")
    c = _Checks(r, timeout_s, "RSA " if mode == "rsa" else "")
    p = c.p
    async with AsyncExitStack() as stack:
        admin_bdk = await stack.enter_async_context(SymphonyBdk(admin_config))
        bot_bdk = await stack.enter_async_context(SymphonyBdk(bot_config))
        admin_factory = _factory(admin_bdk)
        bot_factory = _factory(bot_bdk)
        pod_client = admin_factory.get_pod_client()
        users_api = UsersApi(pod_client)
        session_api = SessionApi(pod_client)

        # The administrator's own session (its bot session: certificate or RSA, as configured).
        n = first_section
        c.section(n, f"session administration: {ADMIN_USERNAME} lists {BOT_USERNAME}'s sessions")
        name = f"{p}{ADMIN_USERNAME} authenticates and sessions().get_session() shows {ADMIN_ROLE}"
        try:
            admin_token = await c.step(admin_bdk.bot_session().session_token)
            me = await c.step(admin_bdk.sessions().get_session())
            if not r.check(name, is_user(me, ADMIN_ID, ADMIN_USERNAME)
                           and ADMIN_ROLE in (me.roles or []),
                           f"{user_detail(me)} roles={getattr(me, 'roles', None)!r}"):
                return
        except Exception as exc:  # noqa: BLE001
            r.fail(name, c.describe(exc))
            return

        async def listing() -> V1UserSessions:
            return await c.step(users_api.v1_users_uid_sessions_get(
                uid=str(BOT_ID), session_token=admin_token))

        def ids(sessions: V1UserSessions) -> list:
            return [s.session_id for s in (sessions.sessions or [])]

        # A. Fresh bot.user sessions, one at a time, from the BDK's own bot authenticator (the
        # same retrieve_session_token() its bot_session() calls; a bot_session().refresh() would
        # also mint a key-manager session). Each listing is diffed with the one before, so that
        # the sessions the earlier checks left behind do not matter.
        bot_authenticator = AuthenticatorFactory(bot_config, bot_factory).get_bot_authenticator()
        tokens: list[str] = []
        sids: list[str] = []
        name = (f"{p}UsersApi.v1_users_uid_sessions_get lists each of {MINTED} new "
                f"{BOT_USERNAME} sessions under one new sessionId")
        try:
            seen = set(ids(await listing()))
            problems = []
            for i in range(MINTED):
                tokens.append(await c.step(bot_authenticator.retrieve_session_token()))
                new = [s for s in ids(await listing()) if s not in seen]
                if len(new) != 1:
                    problems.append(f"after session {i + 1}: {len(new)} new ids")
                seen.update(new)
                sids.extend(new[:1])
            if not r.check(name, not problems and len(set(sids)) == MINTED
                           and len(set(tokens)) == MINTED, "; ".join(problems)
                           or f"{len(set(sids))} distinct ids, {len(set(tokens))} distinct tokens"):
                return
        except Exception as exc:  # noqa: BLE001 - a pydantic ValidationError lands here too
            r.fail(name, c.describe(exc))
            return

        name = (f"{p}every V1Session parses strictly: sessionId a str, userId {BOT_ID}, "
                f"creationTime and expirationDelay ints")
        try:
            listed = await listing()
            bad = [s for s in (listed.sessions or [])
                   if not (isinstance(s.session_id, str) and s.session_id != ""
                           and s.user_id == BOT_ID
                           and isinstance(s.creation_time, int) and s.creation_time > 0
                           and isinstance(s.expiration_delay, int) and s.expiration_delay > 0)]
            r.check(name, isinstance(listed, V1UserSessions) and listed.sessions and not bad,
                    f"got {type(listed).__name__}, {len(listed.sessions or [])} sessions, "
                    f"not matching: {[s.to_dict() for s in bad][:3]!r}")
        except Exception as exc:  # noqa: BLE001
            r.fail(name, c.describe(exc))

        name = f"{p}the listing's raw body carries no session token"
        try:
            raw = (await c.step(users_api.v1_users_uid_sessions_get_with_http_info(
                uid=str(BOT_ID), session_token=admin_token))).raw_data.decode()
            leaked = sum(1 for t in tokens + [admin_token] if t in raw)
            r.check(name, leaked == 0, f"{leaked} tokens appear in the body")
        except Exception as exc:  # noqa: BLE001
            r.fail(name, c.describe(exc))

        await c.status(f"{p}{BOT_USERNAME}'s own session (no administrator role) lists nothing: 403",
                       users_api.v1_users_uid_sessions_get(uid=str(BOT_ID),
                                                           session_token=tokens[-1]), 403)

        # B. End one session by its id.
        n += 1
        c.section(n, f"session administration: end one of {BOT_USERNAME}'s sessions by id")
        name = f"{p}UsersApi.v1_users_uid_sessions_sid_logout_post ends session 1 of {MINTED}"
        try:
            resp = await c.step(users_api.v1_users_uid_sessions_sid_logout_post(
                uid=str(BOT_ID), sid=sids[0], session_token=admin_token))
            r.check(name, is_text_success(resp), success_detail(resp))
        except Exception as exc:  # noqa: BLE001
            r.fail(name, c.describe(exc))
        await c.is_dead(f"{p}the ended session's token gets 401 on /pod/v2/sessioninfo",
                        session_api, tokens[0])
        for i, token in enumerate(tokens[1:], start=2):
            await c.is_alive_as(f"{p}session {i} of {MINTED} still answers as {BOT_USERNAME}",
                                session_api, token, BOT_ID, BOT_USERNAME)
        name = f"{p}the listing no longer holds the ended id, and still holds the others"
        try:
            now = set(ids(await listing()))
            r.check(name, sids[0] not in now and set(sids[1:]) <= now,
                    f"ended id listed: {sids[0] in now}, others listed: {set(sids[1:]) <= now}")
        except Exception as exc:  # noqa: BLE001
            r.fail(name, c.describe(exc))
        await c.status(f"{p}ending the same session id again gets 404",
                       users_api.v1_users_uid_sessions_sid_logout_post(
                           uid=str(BOT_ID), sid=sids[0], session_token=admin_token), 404)

        # C. End all the user's sessions.
        n += 1
        c.section(n, f"session administration: end all of {BOT_USERNAME}'s sessions")
        name = f"{p}UsersApi.v1_users_uid_sessions_logout_post ends all of {BOT_USERNAME}'s sessions"
        try:
            resp = await c.step(users_api.v1_users_uid_sessions_logout_post(
                uid=str(BOT_ID), session_token=admin_token))
            r.check(name, is_text_success(resp), success_detail(resp))
        except Exception as exc:  # noqa: BLE001
            r.fail(name, c.describe(exc))
        for i, token in enumerate(tokens[1:], start=2):
            await c.is_dead(f"{p}session {i} of {MINTED} now gets 401 on /pod/v2/sessioninfo",
                            session_api, token)
        name = f"{p}the listing of {BOT_USERNAME}'s sessions is now empty"
        try:
            left = ids(await listing())
            r.check(name, left == [], f"{len(left)} sessions still listed")
        except Exception as exc:  # noqa: BLE001
            r.fail(name, c.describe(exc))
        await c.is_alive_as(f"{p}the administrator's own session is untouched",
                            session_api, admin_token, ADMIN_ID, ADMIN_USERNAME)

        # D. The app-logout cascade.
        n += 1
        c.section(n, "app logout cascades to the OBO sessions the app session minted")
        name = (f"{p}{APP_ID} authenticates and mints OBO sessions for {OBO_USERNAME} "
                f"by id and by username with that app session")
        try:
            if mode == "cert":
                # The calls OboAuthenticatorCert makes, on the BDK's app client (app certificate).
                app_api = CertificateAuthenticationApi(bot_factory.get_app_session_auth_client())
                app_token = (await c.step(app_api.v1_app_authenticate_post())).token
                obo_by_id = (await c.step(app_api.v1_app_user_uid_authenticate_post(
                    session_token=app_token, uid=OBO_ID))).session_token
                obo_by_name = (await c.step(app_api.v1_app_username_username_authenticate_post(
                    session_token=app_token, username=OBO_USERNAME))).session_token
                logout_api = app_api
            else:
                # The calls OboAuthenticatorRsa makes: a JWT signed by the BDK's jwt_helper with
                # the app's configured private key, on the BDK's login client.
                login_api = AuthenticationApi(bot_factory.get_login_client())
                jwt = create_signed_jwt(bot_config.app.private_key, bot_config.app.app_id)
                app_token = (await c.step(login_api.pubkey_app_authenticate_post(
                    AuthenticateRequest(token=jwt)))).token
                obo_by_id = (await c.step(login_api.pubkey_app_user_user_id_authenticate_post(
                    session_token=app_token, user_id=OBO_ID))).token
                obo_by_name = (await c.step(login_api.pubkey_app_username_username_authenticate_post(
                    session_token=app_token, username=OBO_USERNAME))).token
                # The contract has no RSA logout: the app session minted by RSA is logged out on
                # POST /sessionauth/v1/logout with the app certificate the dev PKI made.
                # The BDK's own ApiClientFactory for that configuration (no bot in it, so no
                # SymphonyBdk, whose extension service needs a bot).
                app_cert_factory = ApiClientFactory(app_cert_config)
                stack.push_async_callback(app_cert_factory.close_clients)
                logout_api = CertificateAuthenticationApi(
                    app_cert_factory.get_app_session_auth_client())
            tokens_ok = all(isinstance(t, str) and t != "" for t in (app_token, obo_by_id, obo_by_name))
            if not r.check(name, tokens_ok and len({app_token, obo_by_id, obo_by_name}) == 3,
                           "empty or repeated tokens"):
                return
        except Exception as exc:  # noqa: BLE001
            r.fail(name, c.describe(exc))
            return
        await c.is_alive_as(f"{p}the OBO session by id belongs to {OBO_USERNAME}",
                            session_api, obo_by_id, OBO_ID, OBO_USERNAME)
        await c.is_alive_as(f"{p}the OBO session by username belongs to {OBO_USERNAME}",
                            session_api, obo_by_name, OBO_ID, OBO_USERNAME)

        # The BDK's own obo(): each mints (and keeps to itself) an app session of its own.
        bdk_obo = {}
        for label, session in ((f"obo(user_id={OBO_ID})", bot_bdk.obo(user_id=OBO_ID)),
                               (f"obo(username={OBO_USERNAME!r})", bot_bdk.obo(username=OBO_USERNAME))):
            try:
                bdk_obo[label] = await c.step(session.session_token)
                await c.is_alive_as(f"{p}the BDK's {label} session belongs to {OBO_USERNAME}",
                                    session_api, bdk_obo[label], OBO_ID, OBO_USERNAME)
            except Exception as exc:  # noqa: BLE001
                r.fail(f"{p}the BDK's {label}.session_token", c.describe(exc))

        name = f"{p}{APP_ID} logs out its app session (certificate, POST /sessionauth/v1/logout)"
        try:
            resp = await c.step(logout_api.v1_logout_post(session_token=app_token))
            message = getattr(resp, "message", None)
            r.check(name, isinstance(message, str) and message != "",
                    f"got {type(resp).__name__} with message {message!r}")
        except Exception as exc:  # noqa: BLE001
            r.fail(name, c.describe(exc))
        await c.status(f"{p}logging out the same app session again gets 401",
                       logout_api.v1_logout_post(session_token=app_token), 401)
        await c.is_dead(f"{p}cascade: the OBO session by id gets 401 on /pod/v2/sessioninfo",
                        session_api, obo_by_id)
        await c.is_dead(f"{p}cascade: the OBO session by username gets 401 on /pod/v2/sessioninfo",
                        session_api, obo_by_name)
        for label, token in bdk_obo.items():
            await c.is_alive_as(f"{p}the BDK's {label} session (another app session's) still works",
                                session_api, token, OBO_ID, OBO_USERNAME)

        name = (f"{p}{ADMIN_USERNAME} ends every {APP_ID} session "
                f"(POST /pod/v1/apps/{APP_ID}/sessions/logout)")
        try:
            resp = await c.step(_admin_logout_app(pod_client, admin_token, APP_ID))
            r.check(name, is_text_success(resp), success_detail(resp))
        except Exception as exc:  # noqa: BLE001
            r.fail(name, c.describe(exc))
        for label, token in bdk_obo.items():
            await c.is_dead(f"{p}cascade: the BDK's {label} session gets 401 on /pod/v2/sessioninfo",
                            session_api, token)
        try:
            fresh = bot_bdk.obo(user_id=OBO_ID)
            await c.is_alive_as(f"{p}{APP_ID} still authenticates: a new obo(user_id={OBO_ID}) works",
                                session_api, await c.step(fresh.session_token), OBO_ID, OBO_USERNAME)
        except Exception as exc:  # noqa: BLE001
            r.fail(f"{p}{APP_ID} still authenticates: a new obo(user_id={OBO_ID}) works",
                   c.describe(exc))
