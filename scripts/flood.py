#!/usr/bin/env python3
"""A bounded flood against a sessionauth server, from one source address (loopback only).

Runs, for DURATION seconds, all at once:
  slow readers   SLOW TLS connections that pipeline GET /health and never read the answers
  idle sockets   IDLE TCP connections that never start TLS (reopened when the server closes them)
  session flood  SESSIONS keep-alive connections minting sessions for one bot as fast as they can
  login flood    LOGINS keep-alive connections failing authentication (a CN no one has)
Prints one JSON object with what each part did. Every count and time is bounded.

usage: flood.py HOST PORT SOURCE_IP CERTS_DIR DURATION [SLOW IDLE SESSIONS LOGINS]
"""
import asyncio
import json
import ssl
import sys
import time

HOST, PORT, SOURCE, CERTS = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
DURATION = float(sys.argv[5])
SLOW, IDLE, SESSIONS, LOGINS = (int(x) for x in (sys.argv[6:10] or ["20", "1500", "4", "4"]))
DEADLINE = time.monotonic() + DURATION
stats = {
    "slow_readers": {"connections": 0, "requests_written": 0, "cut_off": 0},
    "idle_sockets": {"opened": 0, "closed_by_server": 0, "connect_errors": 0},
    "session_flood": {"requests": 0, "statuses": {}},
    "login_flood": {"requests": 0, "statuses": {}},
}


def tls_context(cn):
    ctx = ssl.create_default_context(cafile=f"{CERTS}/ca.pem")
    if cn:
        ctx.load_cert_chain(f"{CERTS}/{cn}.pem", f"{CERTS}/{cn}-key.pem")
    return ctx


def left():
    return max(0.0, DEADLINE - time.monotonic())


async def connect(ctx):
    return await asyncio.wait_for(
        asyncio.open_connection(HOST, PORT, ssl=ctx, server_hostname="localhost",
                                local_addr=(SOURCE, 0)),
        timeout=max(0.1, min(5.0, left())))


async def slow_reader():
    ctx = tls_context(None)
    request = b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n" * 100
    while left() > 0:
        try:
            _, writer = await connect(ctx)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            await asyncio.sleep(0.1)
            continue
        stats["slow_readers"]["connections"] += 1
        try:
            while left() > 0:
                writer.write(request)
                await asyncio.wait_for(writer.drain(), timeout=max(0.1, left()))
                stats["slow_readers"]["requests_written"] += 100
        except asyncio.TimeoutError:
            pass
        except (OSError, ssl.SSLError):
            stats["slow_readers"]["cut_off"] += 1
        writer.transport.abort()


async def idle_socket():
    while left() > 0:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, PORT, local_addr=(SOURCE, 0)),
                timeout=max(0.1, min(5.0, left())))
        except (OSError, asyncio.TimeoutError):
            stats["idle_sockets"]["connect_errors"] += 1
            await asyncio.sleep(0.5)
            continue
        stats["idle_sockets"]["opened"] += 1
        try:
            data = await asyncio.wait_for(reader.read(1), timeout=max(0.1, left()))
            if not data:
                stats["idle_sockets"]["closed_by_server"] += 1
        except (asyncio.TimeoutError, OSError):
            pass
        writer.transport.abort()
        # A closed socket is reopened, but not in a tight loop: the flood stays bounded.
        await asyncio.sleep(0.2)


async def hammer(part, cn):
    ctx = tls_context(cn)
    request = (b"POST /sessionauth/v1/authenticate HTTP/1.1\r\nhost: localhost\r\n"
               b"content-length: 0\r\n\r\n")
    while left() > 0:
        try:
            reader, writer = await connect(ctx)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            await asyncio.sleep(0.1)
            continue
        try:
            while left() > 0:
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
                status = head.split(b" ", 2)[1].decode()
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                s = stats[part]
                s["requests"] += 1
                s["statuses"][status] = s["statuses"].get(status, 0) + 1
                if b"connection: close" in head.lower():
                    break
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        writer.transport.abort()


async def main():
    tasks = [slow_reader() for _ in range(SLOW)]
    tasks += [idle_socket() for _ in range(IDLE)]
    tasks += [hammer("session_flood", "bot.user") for _ in range(SESSIONS)]
    tasks += [hammer("login_flood", "nobody.flood") for _ in range(LOGINS)]
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=DURATION + 15)


try:
    asyncio.run(main())
except asyncio.TimeoutError:
    pass
print(json.dumps(stats))
