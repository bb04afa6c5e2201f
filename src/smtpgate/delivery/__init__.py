"""Delivery targets: Maildir (``maildir``), discard (``discard``), the Received header.

The contract is in ``base``; ``factory.make_target(config)`` picks the target.
"""
