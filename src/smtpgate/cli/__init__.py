"""The ``smtpgate`` command line (``main``)."""
