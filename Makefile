# mailsvc — two commands: `make run` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := slapd ldap-utils dovecot-imapd dovecot-lmtpd dovecot-ldap fonts-dejavu-core chromium poppler-utils
# Samba's AD DC for stack.directory = "samba" (and its tests): the server, its directory modules,
# the ACL module provisioning uses, the schema files. No recommends: no file or print sharing.
APT_PACKAGES += samba samba-dsdb-modules samba-vfs-modules samba-ad-provision
# Tools the tests use beside the servers: systemd-analyze (the unit `mailsvc init` writes, and
# libseccomp for its system call filter), openssl s_client (TLS protocol refusals).
APT_PACKAGES += systemd libseccomp2 openssl
# PostgreSQL for stack.database = "postgresql" and the tests' second pass (initdb, postgres,
# pg_dump and pg_restore from /usr/lib/postgresql/<version>/bin).
APT_PACKAGES += postgresql
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Every installed distribution comes from this lock, each file checked against its sha256.
LOCK := requirements.lock
LOCK_TOOL := .cache/lock-tool
UV_VERSION := 0.13.9
LOCK_ARGS ?=

.PHONY: run test test-postgresql test-samba lint unit system-deps venv lock stack-up stack-down check bench clean

run: system-deps venv ## set everything up and run the service (Ctrl-C stops it)
	$(BIN)/mailsvc run

# Each worker runs whole files with a stack of its own (slapd, Dovecot on free loopback ports).
# First the whole suite with the service on SQLite, then the integration tests again with it on
# PostgreSQL (each worker starts a private cluster of its own). The several-nodes tests always
# use PostgreSQL: they run in the second pass only.
test: system-deps venv lint ## set everything up and run the whole test suite (SQLite, PostgreSQL, Samba AD)
	$(BIN)/pytest -q -ra -n auto --dist loadfile -m "not postgresql_only"
	$(MAKE) --no-print-directory test-postgresql
	$(MAKE) --no-print-directory test-samba

# The tests marked no_database ran in the first pass and are left out here: nothing they assert
# is read from the service's database (directory, Dovecot, TLS, IMAP/LMTP clients, config), so
# their outcome cannot differ by database. The rule in full is beside the marker (pyproject.toml).
test-postgresql: system-deps venv ## the integration tests with the service on PostgreSQL
	MAILSVC_TEST_DATABASE=postgresql $(BIN)/pytest -q -ra -n auto --dist loadfile \
	  -m "not no_database" tests/integration

# The tests marked directory (roster import, addresses, groups, end of mandate, submission AUTH,
# the clerks' panel, distributions) again, with each worker's stack running Samba's AD DC instead
# of slapd and the service in directory.kind = "ad".
test-samba: system-deps venv ## the directory-dependent tests against Samba's AD DC
	MAILSVC_TEST_DIRECTORY=samba $(BIN)/pytest -q -ra -n auto --dist loadfile \
	  -m "directory and not openldap_only" tests/integration

unit: venv ## only the pure unit tests (no servers)
	$(BIN)/pytest -q tests/unit

lint: venv
	$(BIN)/ruff check mailsvc provisioning tests $(wildcard bench)
	$(BIN)/ruff format --check mailsvc provisioning tests $(wildcard bench)
	$(BIN)/mypy
	$(BIN)/lint-imports

system-deps: ## Debian packages: slapd, Samba AD DC and Dovecot (IMAP, LMTP, LDAP), installed if missing
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

# pip upgrades itself from the lock; mailsvc goes in last, without dependencies, built by the
# locked setuptools (no build isolation: nothing fetched unhashed for it). Compiled at install
# (not --no-compile, which would halve the install): a dependency's source compiled later, under
# pytest's warnings-as-errors, fails on its invalid escape sequences (pyspf's spf.py).
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Regenerates $(LOCK) from pyproject.toml (runtime + dev extra, build-system, pip) for Python
# 3.11 on Linux. Pins that still fit are kept; `make lock LOCK_ARGS=--upgrade` takes the newest.
# uv lives in its own throwaway venv: it is a tool of this target, not a dependency.
# pip>=26.1.2: CVE-2026-8643.
lock:
	[ -x $(LOCK_TOOL)/bin/pip ] || $(PYTHON) -m venv $(LOCK_TOOL)
	$(LOCK_TOOL)/bin/pip install -q 'uv==$(UV_VERSION)'
	{ $(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'; \
	  echo 'pip>=26.1.2'; } \
	| $(LOCK_TOOL)/bin/uv pip compile pyproject.toml - --extra dev --generate-hashes \
	    --python-version 3.11 --python-platform linux --custom-compile-command 'make lock' \
	    -q $(LOCK_ARGS) -o $(LOCK)

stack-up: system-deps venv
	$(BIN)/mailsvc stack up

stack-down: venv
	$(BIN)/mailsvc stack down

check: venv
	$(BIN)/mailsvc check

bench: system-deps venv ## benchmarks beside their peers (bench/); not timed tests
	$(BIN)/python bench/relay.py
	$(BIN)/python bench/provision.py
	$(BIN)/python bench/distribute.py
	$(BIN)/python bench/backup.py

clean: stack-down
	rm -rf var
