"""Relay: a durable queue to a smarthost, with OAuth2, retries and bounces (docs/relay.md).

    entry     the queued message's record (JSON)      queue     the files of queue/
    target    the DeliveryTarget for mode = "relay"   deliverer the background sender
    upstream  one aiosmtplib session                  oauth     access tokens
    accounts  which account sends                     dsn       RFC 3464 reports
    service   ``Relay``: target + deliverer lifecycle
"""
