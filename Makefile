# smtpgate — see README.md
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The one list of Debian packages `make test` needs: the real third-party clients
# the tests run (tests/tools.py names the command each provides; tests/test_packaging.py
# checks they are all here); swaks needs Net::SSLeay for TLS, which is only a Recommends.
# `make -s deb-packages` prints it (the README points there instead of copying it).
DEB_PACKAGES := swaks gsasl msmtp curl libnet-ssleay-perl gnutls-bin openssl postgresql fail2ban systemd redis-server haproxy chromium strace

.PHONY: serve test lint venv test-venv deb-tools deb-packages bench fuzz clean

# setup.py's COMPILED list: the modules mypyc compiles; a change to one rebuilds them.
COMPILED := $(shell sed -n 's/^ *"\(src\/smtpgate\/.*\.py\)",$$/\1/p' setup.py)

$(VENV)/.installed: pyproject.toml setup.py src/smtpgate/protocol/_speedups.c $(COMPILED)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

# The test extra's packages alone: `pip install -e '.[test]'` would build smtpgate again.
$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PY) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['test']))" >$(VENV)/test-requirements.txt
	$(PIP) install -q -r $(VENV)/test-requirements.txt
	touch $@

venv: $(VENV)/.installed
test-venv: $(VENV)/.installed-test

serve: venv
	$(VENV)/bin/smtpgate serve

deb-packages:
	@echo $(DEB_PACKAGES)

# Real third-party clients for the interop tests; installed when we are root.
deb-tools:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "warning: missing$$missing (not root; interop tests fail under CI=true)"; fi; \
	fi

lint: test-venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

# Then the pure core once more as plain Python: what a machine without a compiler runs.
test: test-venv deb-tools lint
	$(VENV)/bin/pytest -q
	SMTPGATE_NO_MYPYC=1 $(VENV)/bin/pytest -q tests/protocol tests/test_compiled.py

bench: venv
	bash bench/run.sh

fuzz: test-venv
	$(PIP) install -q -e '.[fuzz]'
	$(PY) -m tests.fuzz.run_all $(or $(FUZZ_SECONDS),60)

clean:
	rm -rf $(VENV) build dist src/*.egg-info
