"""Build the C parts: the DATA framer's speed-up, and the per-command path compiled by
mypyc (docs/performance.md, "Compiled"). Either may be missing (no compiler, no mypy,
``SMTPGATE_NO_MYPYC=1`` at build time): the same modules then run as Python."""

import hashlib
import os
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The modules every command, message and reply passes through. mypyc compiles the typed
# source as it is (mypy --strict keeps it compilable); each stays importable as Python.
# One path a line: the Makefile reads this list to know when to rebuild.
COMPILED = [
    "src/smtpgate/protocol/commands.py",
    "src/smtpgate/protocol/events.py",
    "src/smtpgate/protocol/framing.py",
    "src/smtpgate/protocol/params.py",
    "src/smtpgate/protocol/readers.py",
    "src/smtpgate/protocol/replies.py",
    "src/smtpgate/protocol/session.py",
    "src/smtpgate/protocol/states.py",
    "src/smtpgate/protocol/transaction.py",
    "src/smtpgate/server/connection.py",
    "src/smtpgate/server/context.py",
    "src/smtpgate/server/deadline.py",
    "src/smtpgate/server/guard.py",
    "src/smtpgate/server/ids.py",
    "src/smtpgate/server/transaction.py",
    "src/smtpgate/delivery/fixups.py",
    "src/smtpgate/delivery/received.py",
]
MANIFEST = Path("src/smtpgate/_compiled.py")  # what was compiled, from which source


def framer_speedup() -> list[Extension]:
    return [Extension("smtpgate.protocol._speedups",
                      sources=["src/smtpgate/protocol/_speedups.c"], optional=True)]


def compiled_modules() -> list[Extension]:
    """mypyc's extensions, or none when they cannot be made here."""
    if os.environ.get("SMTPGATE_NO_MYPYC"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("warning: mypy is not installed: smtpgate's hot path stays pure Python")
        return []
    # An isolated build has none of the runtime dependencies: their types become Any,
    # which must neither fail the build nor leave an ignore comment "unused".
    flags = ["--ignore-missing-imports", "--no-warn-unused-ignores", "--follow-imports=silent"]
    try:
        extensions: list[Extension] = mypycify([*flags, *COMPILED], group_name="smtpgate", opt_level="2")
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error it cannot compile
        print(f"warning: mypyc failed ({exc}): smtpgate's hot path stays pure Python")
        return []
    for extension in extensions:
        extension.optional = True  # a compile error is reported, then undone by BuildExt
        # Only PyInit_* is looked up by name (the shims reach the shared library through a
        # capsule): unexported functions leave the symbol tables a worker maps much smaller.
        extension.extra_compile_args.append("-fvisibility=hidden")
    return extensions


def remove_stale_modules(keep: list[Extension]) -> None:
    """Drop compiled modules an earlier in-place build left that this one does not make
    (an extension is imported before the source of the same name)."""
    made = {ext.name for ext in keep}
    for built in Path("src/smtpgate").rglob("*.so"):
        name = ".".join(built.relative_to("src").with_name(built.name.split(".")[0]).parts)
        if built.with_name(built.name.split(".")[0] + ".py").exists() and name not in made:
            built.unlink()


class BuildExt(build_ext):
    """Runs mypyc only when extensions are built (not for metadata), and keeps all of
    its modules or none: a module whose shared library failed would not import at all."""

    def finalize_options(self) -> None:
        MANIFEST.unlink(missing_ok=True)
        self.compiled = compiled_modules()
        self.distribution.ext_modules = [*framer_speedup(), *self.compiled]
        remove_stale_modules(self.compiled)
        super().finalize_options()
        self.failed: list[str] = []

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception:
            self.failed.append(ext.name)
            raise

    def run(self) -> None:
        super().run()
        if not self.compiled:
            return
        if any(ext.name in self.failed for ext in self.compiled):
            print("warning: mypyc's modules did not build: smtpgate runs as pure Python")
            for ext in self.compiled:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            return
        MANIFEST.write_text(
            '"""Written by setup.py: the sha256 of each compiled module\'s source when it was'
            ' built\n(tests/conftest.py refuses to test a stale build)."""\n\nSOURCES = {\n'
            + "".join(f'    "{path}": "{hashlib.sha256(Path(path).read_bytes()).hexdigest()}",\n'
                      for path in COMPILED)
            + "}\n")


setup(ext_modules=framer_speedup(), cmdclass={"build_ext": BuildExt})
