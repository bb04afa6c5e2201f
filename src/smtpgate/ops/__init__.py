"""Operations: Prometheus metrics, log formatting and reload helpers.

The lowest layer after the pure core: it imports nothing from smtpgate but the
configuration schema, so the auth service, the server and the CLI may all
use it.
"""
