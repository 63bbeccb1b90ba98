"""A buffering HTTP front for gunicorn: whole requests in, with time limits, before a worker sees them.

Why: gunicorn's gthread worker parses a request in the worker thread that serves it, so a client
sending its headers or body slowly holds one of the THREADS threads (4 partial bodies or 8
partial headers made /health time out), and 200 connections queue before the app's own /predict
limiter can answer 503. An async/greenlet worker would not help the CPU-bound model (one OS
thread), and nginx would need root apt-get in ``make run``. This process reads each request
fully (h11, a maintained HTTP/1.1 parser) on one asyncio loop, with a total deadline for the head
and for the body and a body size cap, then forwards it whole over a unix socket to gunicorn and
buffers the whole answer before sending it back (slow readers hold a buffer here, not a thread).

Started and stopped by ``backend/gunicorn_conf.py`` (``on_starting`` / ``on_exit``): it takes the
addresses gunicorn was asked to bind, gunicorn binds a private unix socket instead. So ``make run``,
the Docker image and every test that starts gunicorn serve through it. ``CAMCUT_FRONT=0`` serves
gunicorn directly (e.g. behind your own buffering proxy).

Limits (settings table, backend/config.py): CAMCUT_HEADER_TIMEOUT (10 s for a request line + headers, also the idle
keep-alive limit), CAMCUT_BODY_TIMEOUT (30 s for a whole body), CAMCUT_MAX_REQUEST_BYTES (16 MiB),
CAMCUT_MAX_CONNECTIONS (2000; more are closed at once). Answers: 408 on a timeout, 413, 400.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import h11

from backend.config import read_setting

HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"proxy-connection",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"content-length",
}


class Limits:
    def __init__(self) -> None:
        self.header = read_setting("CAMCUT_HEADER_TIMEOUT")
        self.body = read_setting("CAMCUT_BODY_TIMEOUT")
        self.max_body = read_setting("CAMCUT_MAX_REQUEST_BYTES")  # the one body limit: the app enforces it too
        self.max_conns = read_setting("CAMCUT_MAX_CONNECTIONS")
        # gunicorn kills a worker after TIMEOUT; TIMEOUT=0 is gunicorn's "no limit", so no limit here either
        timeout = read_setting("TIMEOUT")
        self.upstream: float | None = timeout + 30 if timeout else None
        self.send = 60.0


class Refuse(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


async def _event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    while True:
        ev = conn.next_event()
        if ev is not h11.NEED_DATA:
            return ev
        conn.receive_data(await reader.read(65536))


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader, lim: Limits) -> tuple[h11.Request, bytes] | None:
    try:
        req = await asyncio.wait_for(_event(conn, reader), lim.header)
    except TimeoutError:
        raise Refuse(408, "request head not received in time") from None
    if isinstance(req, h11.ConnectionClosed):
        return None
    assert isinstance(req, h11.Request)
    body = bytearray()

    async def read_body() -> None:
        while True:
            ev = await _event(conn, reader)
            if isinstance(ev, h11.Data):
                body.extend(ev.data)
                if len(body) > lim.max_body:
                    raise Refuse(413, f"request body over {lim.max_body} bytes")
            elif isinstance(ev, h11.EndOfMessage):
                return
            else:
                raise Refuse(400, "connection closed inside the request body")

    try:
        await asyncio.wait_for(read_body(), lim.body)
    except TimeoutError:
        raise Refuse(408, "request body not received in time") from None
    return req, bytes(body)


async def _forward(req: h11.Request, body: bytes, upstream: str, peer: str, lim: Limits) -> tuple[int, list, bytes]:
    reader, writer = await asyncio.open_unix_connection(upstream)
    try:
        up = h11.Connection(h11.CLIENT)
        headers = [(k, v) for k, v in req.headers if k.lower() not in HOP_BY_HOP and k.lower() != b"x-forwarded-for"]
        if not any(k.lower() == b"host" for k, _ in headers):
            headers.append((b"host", b"camcut"))
        headers += [(b"content-length", str(len(body)).encode()), (b"connection", b"close"), (b"x-forwarded-for", peer.encode())]
        writer.write(
            up.send(h11.Request(method=req.method, target=req.target, headers=headers))
            + up.send(h11.Data(data=body))
            + up.send(h11.EndOfMessage())
        )
        await writer.drain()

        async def answer() -> tuple[int, list, bytes]:
            resp = await _event(up, reader)
            while isinstance(resp, h11.InformationalResponse):
                resp = await _event(up, reader)
            assert isinstance(resp, h11.Response)
            data = bytearray()
            while not isinstance(ev := await _event(up, reader), h11.EndOfMessage):
                if isinstance(ev, h11.Data):
                    data.extend(ev.data)
            return resp.status_code, [(k, v) for k, v in resp.headers if k.lower() not in HOP_BY_HOP], bytes(data)

        return await asyncio.wait_for(answer(), lim.upstream)
    finally:
        writer.close()


async def _send(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    status: int,
    headers: list,
    body: bytes,
    lim: Limits,
    head_only: bool = False,
) -> None:
    if status not in (204, 304):
        headers = headers + [(b"content-length", str(len(body)).encode())]
    out = conn.send(h11.Response(status_code=status, headers=headers))
    if body and not head_only:
        out += conn.send(h11.Data(data=body))
    out += conn.send(h11.EndOfMessage())
    writer.write(out)
    await asyncio.wait_for(writer.drain(), lim.send)


class Front:
    def __init__(self, upstream: str, lim: Limits) -> None:
        self.upstream, self.lim, self.conns = upstream, lim, 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns += 1
        peer = str((writer.get_extra_info("peername") or ("?",))[0])
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            if self.conns > self.lim.max_conns:
                return
            while True:
                try:
                    got = await _read_request(conn, reader, self.lim)
                except (Refuse, h11.RemoteProtocolError) as exc:
                    status, reason = (exc.status, exc.reason) if isinstance(exc, Refuse) else (400, "malformed HTTP request")
                    if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                        body = f'{{"error": "{reason}", "status": {status}}}'.encode()
                        await _send(
                            conn,
                            writer,
                            status,
                            [(b"content-type", b"application/json"), (b"connection", b"close")],
                            body,
                            self.lim,
                        )
                    return
                if got is None:
                    return
                req, body = got
                try:
                    status, headers, data = await _forward(req, body, self.upstream, peer, self.lim)
                except (OSError, TimeoutError, h11.ProtocolError, AssertionError):
                    status, headers = 502, [(b"content-type", b"application/json")]
                    data = b'{"error": "the backend workers are not answering", "status": 502}'
                await _send(conn, writer, status, headers, data, self.lim, head_only=req.method == b"HEAD")
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (OSError, TimeoutError, h11.ProtocolError):
            return
        finally:
            self.conns -= 1
            writer.close()


async def serve(listen: list[str], upstream: str, parent: int) -> None:
    front = Front(upstream, Limits())
    servers = []
    for addr in listen:
        host, _, port = addr.rpartition(":")
        servers.append(await asyncio.start_server(front.handle, host.strip("[]") or "0.0.0.0", int(port), backlog=2048))
    print("ready", flush=True)  # gunicorn_conf waits for this line: the public ports are bound
    while os.getppid() == parent:  # the gunicorn master died (even SIGKILL): do not outlive it
        await asyncio.sleep(1.0)
    for s in servers:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", action="append", required=True, help="host:port (repeatable)")
    ap.add_argument("--upstream", required=True, help="gunicorn's unix socket")
    ap.add_argument("--parent", type=int, default=os.getppid())
    a = ap.parse_args()
    try:
        asyncio.run(serve(a.listen, a.upstream, a.parent))
    except OSError as exc:
        print(f"camcut front: cannot listen on {a.listen}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
