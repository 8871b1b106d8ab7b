# mailsvc — two commands: `make run` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := slapd ldap-utils dovecot-imapd dovecot-lmtpd dovecot-ldap fonts-dejavu-core chromium poppler-utils
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint unit system-deps venv stack-up stack-down check bench clean

run: system-deps venv ## set everything up and run the service (Ctrl-C stops it)
	$(BIN)/mailsvc run

test: system-deps venv lint ## set everything up and run the whole test suite
	$(BIN)/pytest -q -ra

unit: venv ## only the pure unit tests (no servers)
	$(BIN)/pytest -q tests/unit

lint: venv
	$(BIN)/ruff check mailsvc provisioning tests $(wildcard bench)
	$(BIN)/ruff format --check mailsvc provisioning tests $(wildcard bench)
	$(BIN)/mypy
	$(BIN)/lint-imports

system-deps: ## Debian packages: slapd and Dovecot (IMAP, LMTP, LDAP), installed if missing
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

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

clean: stack-down
	rm -rf var
