"""Build the optional C speed-up of the DATA framer (pure-Python fallback if it fails)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "smtpgate.protocol._speedups",
            sources=["src/smtpgate/protocol/_speedups.c"],
            optional=True,
        )
    ]
)
