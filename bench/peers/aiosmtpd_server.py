"""Benchmark peer: aiosmtpd 1.4.6 on a plain asyncio loop (no Controller thread).

Discards every message; accepts the bench user via AUTH PLAIN/LOGIN without TLS.

    python aiosmtpd_server.py --port 2601 --user bench --password bench [--uvloop]

Prints "READY <port>" on stdout once listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import signal
import sys
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


class DiscardHandler:
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 OK discarded"


def make_authenticator(user: str, password: str) -> Any:
    want_user = user.encode()
    want_pass = password.encode()

    def authenticator(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = hmac.compare_digest(auth_data.login, want_user) and hmac.compare_digest(
            auth_data.password, want_pass
        )
        return AuthResult(success=ok, handled=False)

    return authenticator


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    handler = DiscardHandler()
    authenticator = make_authenticator(args.user, args.password)

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname="aiosmtpd.bench.test",  # avoid a getfqdn() per connection
            data_size_limit=64 * 1024 * 1024,
            auth_required=True,
            auth_require_tls=False,
            authenticator=authenticator,
            loop=loop,
        )

    server = await loop.create_server(factory, host=args.host, port=args.port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {args.port}", flush=True)
    await stop.wait()
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="bench")
    parser.add_argument("--password", default="bench")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
