"""Choose the delivery target named by ``[delivery] mode``."""

from __future__ import annotations

from smtpgate.config.schema import Config
from smtpgate.delivery.base import DeliveryTarget
from smtpgate.delivery.discard import DiscardTarget
from smtpgate.delivery.maildir import MaildirTarget

MAIL_DIR = "mail"  # <data_dir>/mail/<recipient>/{tmp,new,cur}


def make_target(config: Config) -> DeliveryTarget:
    """``maildir``: Maildirs under ``<data_dir>/mail``, crash leftovers removed first
    (each worker process calls this at start); ``discard``: drop everything."""
    match config.delivery.mode:
        case "maildir":
            target = MaildirTarget(config.data_dir / MAIL_DIR, hostname=config.hostname)
            target.recover()
            return target
        case "discard":
            return DiscardTarget()
        case "relay":  # needs its deliverer running: smtpgate.relay.service.Relay builds both
            raise ValueError('delivery.mode = "relay": use smtpgate.relay.service.Relay(config)')
