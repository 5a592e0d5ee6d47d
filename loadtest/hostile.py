#!/usr/bin/env python3
"""Hostile clients against a running loco-discovery: holds idle, partial-header,
never-reading SSE and fragmenting WebSocket connections, and prints how many the
gateway still keeps open over time and its RSS (from /proc/<pid>/status).

usage: hostile.py HOST:PORT GATEWAY_PID [--idle N] [--partial N] [--never-reading N]
                  [--fragmenting N] [--watch SECONDS]
Every loop is bounded in count and time; use loopback only."""
import argparse, base64, os, select, socket, struct, sys, time

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1

def connect(addr, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(addr)
    return s

def ws_frame(opcode, payload, fin):
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

def still_open(socks):
    """Sockets the server has not closed (a readable socket that reads b'' is closed;
    never-reading clients are only peeked at with MSG_PEEK so they stay never-reading)."""
    alive = []
    for kind, s in socks:
        try:
            if kind == "never-reading":
                # Unread data hides the FIN from recv: ask TCP for the state instead
                # (1 = ESTABLISHED; CLOSE_WAIT or CLOSE once the server closed).
                if s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 1:
                    alive.append((kind, s))
                else:
                    s.close()
                continue
            r, _, _ = select.select([s], [], [], 0)
            if r:
                # Read what the server sent (a WebSocket close frame) up to EOF.
                data = s.recv(65536)
                if not data:
                    s.close(); continue
            alive.append((kind, s))
        except OSError:
            s.close()
    return alive

def main():
    p = argparse.ArgumentParser()
    p.add_argument("addr"); p.add_argument("pid", type=int)
    p.add_argument("--idle", type=int, default=100)
    p.add_argument("--partial", type=int, default=100)
    p.add_argument("--never-reading", type=int, default=50)
    p.add_argument("--fragmenting", type=int, default=20)
    p.add_argument("--ws-idle", type=int, default=0,
                   help="well-behaved WebSocket subscribers that stay connected (RSS per connection)")
    p.add_argument("--watch", type=float, default=40)
    a = p.parse_args()
    host, port = a.addr.rsplit(":", 1); addr = (host, int(port))
    base = rss_kib(a.pid)
    print(f"gateway RSS before: {base} KiB")
    socks = []
    for _ in range(a.idle):
        socks.append(("idle", connect(addr)))
    for _ in range(a.partial):
        s = connect(addr); s.sendall(b"GET /api/instances/live HTTP/1.1\r\nHost: x\r\nX-Slow: "); socks.append(("partial", s))
    for _ in range(a.never_reading):
        s = connect(addr, rcvbuf=4096)
        s.sendall(b"GET /api/instances/stream HTTP/1.1\r\nHost: x\r\n\r\n"); socks.append(("never-reading", s))
    def ws_connect():
        s = connect(addr)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /api/instances/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        s.recv(4096)
        return s
    if a.ws_idle:
        before = rss_kib(a.pid)
        for _ in range(a.ws_idle):
            socks.append(("ws-idle", ws_connect()))
        time.sleep(2)
        after = rss_kib(a.pid)
        print(f"{a.ws_idle} WebSocket subscribers: RSS {before} -> {after} KiB, "
              f"{(after - before) / a.ws_idle:.1f} KiB per connection")
    frag_bytes = 0
    for _ in range(a.fragmenting):
        s = ws_connect()
        chunk = b"x" * 16384
        try:
            s.sendall(ws_frame(0x1, chunk, False)); frag_bytes += len(chunk)
            for _ in range(63):  # up to 1 MiB of one unfinished message per connection
                s.sendall(ws_frame(0x0, chunk, False)); frag_bytes += len(chunk)
        except OSError:
            pass
        socks.append(("fragmenting", s))
    print(f"opened: idle={a.idle} partial={a.partial} never-reading={a.never_reading} "
          f"fragmenting={a.fragmenting} (fragment bytes the server accepted or refused: {frag_bytes})")
    start = time.time(); peak = 0
    while time.time() - start < a.watch:
        socks = still_open(socks)
        counts = {}
        for kind, _ in socks:
            counts[kind] = counts.get(kind, 0) + 1
        rss = rss_kib(a.pid); peak = max(peak, rss)
        print(f"t={time.time()-start:5.1f}s open={dict(sorted(counts.items()))} RSS={rss} KiB", flush=True)
        time.sleep(2.5)
    for _, s in socks:
        s.close()
    time.sleep(2)
    print(f"gateway RSS: before {base} KiB, peak {peak} KiB, after every client left {rss_kib(a.pid)} KiB")

if __name__ == "__main__":
    main()
