"""smtpgate: an authenticated SMTP submission server and embeddable library."""

__version__ = "0.1.0"
