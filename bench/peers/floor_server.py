"""Benchmark floor: the least a Python SMTP responder on uvloop can do for the load.

Not a server: it answers each command line by its verb alone (no syntax, no state
table, no AUTH check, no limits, no logs) and finds the end of DATA with one
``bytes.find``. What it costs per W1 message or W2 handshake is what any Python
server on uvloop pays before doing any SMTP work: the event loop's callbacks, one
``data_received`` per read and one ``write`` per reply, and the kernel's loopback
TCP. docs/performance.md compares smtpgate and Node against it.

    python floor_server.py --port 2601 [--user U --password P]   # user/password ignored

Prints "READY <port>" on stdout once listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

REPLIES = {
    b"EHLO": b"250-floor\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 AUTH PLAIN LOGIN\r\n",
    b"HELO": b"250 floor\r\n",
    b"AUTH": b"235 2.7.0 Authentication successful\r\n",
    b"MAIL": b"250 2.1.0 OK\r\n",
    b"RCPT": b"250 2.1.5 OK\r\n",
    b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    b"RSET": b"250 2.0.0 OK\r\n",
    b"NOOP": b"250 2.0.0 OK\r\n",
    b"QUIT": b"221 2.0.0 Bye\r\n",
}
UNKNOWN = b"500 5.5.2 Unknown command\r\n"
END = b"\r\n.\r\n"


class Floor(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.in_data = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(b"220 floor ESMTP\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        out = []
        while buffer:
            if self.in_data:
                end = buffer.find(END)
                if end < 0:
                    buffer = buffer[-4:]  # enough to find an END split across reads
                    break
                buffer = buffer[end + 5:]
                self.in_data = False
                out.append(b"250 2.0.0 OK queued\r\n")
                continue
            eol = buffer.find(b"\n")
            if eol < 0:
                break
            verb = buffer[:4].upper()
            buffer = buffer[eol + 1:]
            out.append(REPLIES.get(verb, UNKNOWN))
            if verb == b"DATA":
                self.in_data = True
            elif verb == b"QUIT":
                assert self.transport is not None
                self.transport.write(b"".join(out))
                self.transport.close()
                return
        self.buffer = buffer
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Floor, "127.0.0.1", port, backlog=4096)
    print(f"READY {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
