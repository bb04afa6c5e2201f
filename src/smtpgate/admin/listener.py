"""Serving the admin application on ``[admin] address``, on the server's event loop.

aiohttp runs on the loop already running the SMTP listeners (no second
thread or process, no ASGI server with its own signal handling), so the pages
read the same ``Throttle`` and store objects the SMTP side uses.
"""

from __future__ import annotations

import logging

from aiohttp import web

from smtpgate.admin.app import make_app
from smtpgate.admin.context import AdminContext
from smtpgate.config.schema import parse_address

log = logging.getLogger("smtpgate.admin")
SHUTDOWN_TIMEOUT = 2.0  # seconds open admin requests get on stop


class AdminListener:
    def __init__(self, context: AdminContext) -> None:
        self.context = context
        self.address: tuple[str, int] | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind ``[admin] address``; OSError if it is taken."""
        host, port = parse_address(self.context.config.admin.address)
        runner = web.AppRunner(
            make_app(self.context), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0]
        self.address = (str(bound[0]), int(bound[1]))
        log.info("admin listening on %s", self.context.config.admin.address)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
