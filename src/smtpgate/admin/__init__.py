"""The admin listener: /healthz, /readyz, /metrics and the logged-in admin page.

``Server`` starts an ``AdminListener`` when ``[admin] address`` is set (one
process of several workers: see ``server/run.py``). docs/admin.md describes
the pages; ``app.py`` the guard that keeps every page behind a login.
"""
