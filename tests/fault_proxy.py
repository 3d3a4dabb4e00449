#!/usr/bin/env python3
"""A fault-injecting HTTP/1.1 reverse proxy for smpfs's remote-fault tests and soak.

It sits on loopback between smpfs and one upstream server (moto for S3, the fake Drive
server), relays requests and responses byte for byte over keep-alive connections, and on
the requests a fault matches does one of:

  reset     close the client's connection with a TCP RST (SO_LINGER 0)
  stall     send nothing at all until the client gives up (or the stall is released)
  trickle   relay the response at `bytes_per_sec` (default 16 KiB/s)
  status    answer `status` itself (default 503) with an S3 XML error (`code`, default
            SlowDown) or a Drive JSON error (`reason`, default backendError); see `flavor`
  truncate  relay the response head unchanged (Content-Length and all) and only the first
            `keep` fraction (default 0.5) of the body, then close the connection (with
            `"rst": true` by a reset); an answer without a body is cut inside its head

`phase` says when: "request" (the default: the upstream never sees the request) or
"response" (reset, stall: the upstream handles the request, its answer is lost).
trickle and truncate always act on the response.

Faults are set at run time through the proxy's own port (paths under /_proxy/, JSON):

  POST /_proxy/faults  {"faults": [FAULT, ...]}   replaces the list ([] clears it; stalled
                       connections are then released, i.e. closed)
  GET  /_proxy/stats   counters: requests, faults served by kind, connections open
  POST /_proxy/stats   the same, and zeroes the counters

FAULT is {"kind": ..., "match": "GET /", "rate": 1.0, "count": null, ...}: it applies to
requests whose `METHOD PATH?QUERY` contains `match`, with probability `rate`, at most
`count` times (null: no limit). The first fault that applies wins.

Run: fault_proxy.py --upstream 127.0.0.1:PORT [--port PORT] [--flavor s3|drive|dropbox]
     [--port-file FILE] [--faults JSON]
The proxy prints its port on stdout once it listens (and writes it to --port-file).
"""

import argparse
import asyncio
import json
import random
import socket
import struct
import sys

FAULT_KINDS = ("reset", "stall", "trickle", "status", "truncate")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "upgrade"}
MAX_HEAD = 64 << 10
PIECE = 256 << 10

faults = []
stats = {}
stall_release = None  # an asyncio.Event, set (and replaced) whenever faults change
flavor = "s3"
upstream = ("127.0.0.1", 0)
here = ("127.0.0.1", 0)


def zero_stats():
    global stats
    stats = {
        "requests": 0,
        "relayed": 0,
        "faults": {kind: 0 for kind in FAULT_KINDS},
        "upstream_reconnects": 0,
        "client_connections": 0,
        "upstream_connections": 0,
        "bytes_down": 0,
    }


zero_stats()
open_connections = {"client": 0, "upstream": 0}


class Closed(Exception):
    """The peer closed the connection (or sent something that is not HTTP/1.1)."""


async def read_head(reader):
    """Reads a request or response head; returns (start line, [(name, value)]) or None at
    a clean EOF before the first byte."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise Closed("EOF inside a message head")
    except asyncio.LimitOverrunError:
        raise Closed("message head too long")
    except (ConnectionError, OSError) as e:
        raise Closed(str(e))
    lines = raw[:-4].decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return lines[0], headers


def header(headers, name):
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def tokens(headers, name):
    return {t.strip().lower() for k, v in headers if k.lower() == name for t in v.split(",")}


def encode_head(start, headers):
    lines = [start] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_body(reader, headers, is_request, status=None, method=None):
    """Reads a message body as it came on the wire (chunked stays chunked). Returns
    (bytes, until_eof): until_eof when the body ends with the connection."""
    if not is_request and (method == "HEAD" or status in (204, 304) or 100 <= status < 200):
        return b"", False
    if "chunked" in tokens(headers, "transfer-encoding"):
        out = bytearray()
        while True:
            line = await reader.readuntil(b"\r\n")
            out += line
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = await reader.readuntil(b"\r\n")
                    out += trailer
                    if trailer == b"\r\n":
                        return bytes(out), False
            out += await reader.readexactly(size + 2)
    length = header(headers, "content-length")
    if length is not None:
        return await reader.readexactly(int(length)), False
    if is_request:
        return b"", False
    return await reader.read(), True


def pick_fault(target):
    for fault in faults:
        if fault.get("match", "") not in target:
            continue
        count = fault.get("count")
        if count is not None and count <= 0:
            continue
        if random.random() >= fault.get("rate", 1.0):
            continue
        if count is not None:
            fault["count"] = count - 1
        stats["faults"][fault["kind"]] += 1
        return fault
    return None


def reset(writer):
    """Closes a connection with a TCP RST."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


async def stall(reader):
    """Holds a connection silent until the client closes it or faults change."""
    release = stall_release
    eof = asyncio.ensure_future(reader.read())
    done = asyncio.ensure_future(release.wait())
    await asyncio.wait([eof, done], return_when=asyncio.FIRST_COMPLETED, timeout=900)
    eof.cancel()
    done.cancel()


def error_answer(fault):
    status = int(fault.get("status", 503))
    if flavor == "dropbox":
        summary = fault.get("summary", "internal_error")
        body = json.dumps({"error_summary": summary + "/..", "error": {".tag": summary}}).encode()
        ctype = "application/json"
    elif flavor == "drive":
        reason = fault.get("reason", "backendError")
        body = json.dumps({"error": {"code": status, "message": f"injected {status} {reason}",
                                     "errors": [{"reason": reason, "message": "injected"}]}}).encode()
        ctype = "application/json; charset=UTF-8"
    else:
        code = fault.get("code", "SlowDown" if status == 503 else "InternalError")
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>injected {status} {code}</Message>"
                f"<RequestId>fault-{random.getrandbits(32):08x}</RequestId></Error>").encode()
        ctype = "application/xml"
    reasons = {500: "Internal Server Error", 503: "Service Unavailable", 429: "Too Many Requests",
               403: "Forbidden"}
    head = encode_head(f"HTTP/1.1 {status} {reasons.get(status, 'Error')}",
                       [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return head + body


async def send_slowly(writer, data, rate):
    step = max(1, rate // 20)
    for at in range(0, len(data), step):
        writer.write(data[at:at + step])
        await writer.drain()
        stats["bytes_down"] += min(step, len(data) - at)
        await asyncio.sleep(0.05)


class Upstream:
    """The upstream connection of one client connection, opened lazily and reused."""

    def __init__(self):
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(*upstream, limit=MAX_HEAD)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stats["upstream_connections"] += 1
        open_connections["upstream"] += 1

    def close(self):
        if self.writer is not None:
            self.writer.transport.abort()
            self.writer = self.reader = None
            open_connections["upstream"] -= 1

    async def exchange(self, request, method):
        """Sends a request and reads the response head; on a reused connection the server
        may have closed meanwhile, so one fresh connection is tried if nothing came back."""
        for attempt in range(2):
            fresh = self.writer is None
            if fresh:
                await self.open()
            try:
                self.writer.write(request)
                await self.writer.drain()
                while True:
                    head = await read_head(self.reader)
                    if head is None:
                        raise Closed("upstream closed")
                    status = int(head[0].split()[1])
                    if status == 100:
                        continue
                    return head, status
            except (Closed, ConnectionError, OSError):
                self.close()
                if fresh or attempt:
                    raise
                stats["upstream_reconnects"] += 1
        raise Closed("unreachable")


async def control(writer, method, path, body):
    global faults, stall_release
    if path == "/_proxy/faults" and method in ("POST", "PUT"):
        new = json.loads(body or b"{}").get("faults", [])
        for fault in new:
            if fault.get("kind") not in FAULT_KINDS:
                answer = (400, {"error": f"unknown fault kind {fault.get('kind')!r}"})
                break
        else:
            faults = new
            stall_release.set()
            stall_release = asyncio.Event()
            answer = (200, {"faults": faults})
    elif path == "/_proxy/stats":
        answer = (200, dict(stats, open=dict(open_connections)))
        if method == "POST":
            zero_stats()
    else:
        answer = (404, {"error": f"no control {method} {path}"})
    payload = json.dumps(answer[1]).encode()
    writer.write(encode_head(f"HTTP/1.1 {answer[0]} X", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]) + payload)
    await writer.drain()


async def serve(reader, writer):
    stats["client_connections"] += 1
    open_connections["client"] += 1
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    up = Upstream()
    try:
        while await serve_one(reader, writer, up):
            pass
    except (Closed, ConnectionError, OSError, asyncio.IncompleteReadError,
            asyncio.LimitOverrunError, ValueError, IndexError):
        pass
    finally:
        up.close()
        writer.transport.abort()
        open_connections["client"] -= 1


async def serve_one(reader, writer, up):
    """Serves one request; returns whether the client connection stays open."""
    head = await read_head(reader)
    if head is None:
        return False
    start, headers = head
    method, target, version = start.split(" ", 2)
    if "100-continue" in tokens(headers, "expect"):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        headers = [(k, v) for k, v in headers if k.lower() != "expect"]
    body, _ = await read_body(reader, headers, True)
    client_close = "close" in tokens(headers, "connection") or version == "HTTP/1.0"
    if target.startswith("/_proxy/"):
        await control(writer, method, target, body)
        return not client_close
    stats["requests"] += 1
    fault = pick_fault(f"{method} {target}")
    kind = fault and fault["kind"]
    phase = fault.get("phase", "request") if fault else None
    if kind == "reset" and phase == "request":
        reset(writer)
        return False
    if kind == "stall" and phase == "request":
        await stall(reader)
        return False
    if kind == "status":
        writer.write(error_answer(fault))
        await writer.drain()
        return not client_close

    forwarded = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]
    request = encode_head(start, forwarded) + body
    (status_line, rheaders), status = await up.exchange(request, method)
    rbody, until_eof = await read_body(up.reader, rheaders, False, status, method)
    upstream_close = until_eof or "close" in tokens(rheaders, "connection")
    if upstream_close:
        up.close()
    stats["relayed"] += 1

    if kind == "reset":
        reset(writer)
        return False
    if kind == "stall":
        await stall(reader)
        return False
    out = []
    for k, v in rheaders:
        if k.lower() in HOP_BY_HOP:
            continue
        if k.lower() == "location":
            v = v.replace(f"{upstream[0]}:{upstream[1]}", f"{here[0]}:{here[1]}")
        out.append((k, v))
    keep_open = not (client_close or until_eof)
    if not keep_open:
        out.append(("Connection", "close"))
    wire_head = encode_head(status_line, out)
    if kind == "truncate":
        # The body cut short; an empty body's answer is cut inside its head.
        keep = float(fault.get("keep", 0.5))
        wire = wire_head + rbody[:int(len(rbody) * keep)] if rbody else \
            wire_head[:int(len(wire_head) * keep)]
        writer.write(wire)
        await writer.drain()
        stats["bytes_down"] += len(wire)
        if fault.get("rst"):
            reset(writer)
        return False
    if kind == "trickle":
        await send_slowly(writer, wire_head + rbody, int(fault.get("bytes_per_sec", 16 << 10)))
        return keep_open
    writer.write(wire_head)
    for at in range(0, len(rbody), PIECE):
        writer.write(rbody[at:at + PIECE])
        await writer.drain()
    stats["bytes_down"] += len(rbody)
    return keep_open


async def main():
    global flavor, upstream, here, stall_release, faults
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--flavor", choices=("s3", "drive", "dropbox"), default="s3")
    parser.add_argument("--port-file")
    parser.add_argument("--faults", help="initial fault list (JSON)")
    args = parser.parse_args()
    flavor = args.flavor
    host, _, port = args.upstream.rpartition(":")
    upstream = (host or "127.0.0.1", int(port))
    stall_release = asyncio.Event()
    if args.faults:
        faults = json.loads(args.faults)
    server = await asyncio.start_server(serve, "127.0.0.1", args.port, limit=MAX_HEAD,
                                        backlog=512)
    here = server.sockets[0].getsockname()[:2]
    print(here[1], flush=True)
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{here[1]}\n")
        import os
        os.rename(args.port_file + ".tmp", args.port_file)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
