"""The names of the mechanisms smtpgate implements, without the mechanisms.

The configuration checks ``[auth] mechanisms`` against these names, and the
supervisor of ``smtpgate serve`` loads the configuration: importing the
mechanisms themselves would load hashlib (libcrypto, megabytes resident) in a
process that never runs one (docs/performance.md, "Lean processes").
``registry.py`` derives the same tuple from the mechanism classes and refuses
to import if the two differ, so the classes stay the one declaration.
"""

from __future__ import annotations

# Every mechanism smtpgate implements, in this order (config errors, ``user list``).
KNOWN_MECHANISMS: tuple[str, ...] = (
    "PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256",
    "SCRAM-SHA-256-PLUS",
)
