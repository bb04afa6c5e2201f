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

$(VENV)/.installed: pyproject.toml setup.py src/smtpgate/protocol/_speedups.c
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install -q -e '.[test]'
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

test: test-venv deb-tools lint
	$(VENV)/bin/pytest -q

bench: venv
	bash bench/run.sh

fuzz: test-venv
	$(PIP) install -q -e '.[fuzz]'
	$(PY) -m tests.fuzz.run_all $(or $(FUZZ_SECONDS),60)

clean:
	rm -rf $(VENV) build dist src/*.egg-info
