# Two commands set everything up on a fresh Debian/Ubuntu machine:
#   make demo   the test VM with a running library and a real backup against it
#   make test   unit tests on the host, then the e2e tests in the VM
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
# gcc + linux-libc-dev: a unit test lays out target_core_user.h with the C compiler.
HOST_PACKAGES := qemu-system-x86 qemu-utils debootstrap e2fsprogs gcc linux-libc-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
E2E_TIMEOUT ?= 3000

.PHONY: test unit integration e2e demo vm host-deps venv lint clean

test: unit integration e2e

host-deps:
	@missing=$$(for p in $(HOST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing host packages: $$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# Azurite (the Azure test server) runs on Node.js; use the machine's if it has one.
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm; }

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check .

unit: venv lint
	$(VENV)/bin/pytest -q tests/unit

# Real object-store servers on 127.0.0.1 (SeaweedFS, fake-gcs-server, Azurite).
integration: venv host-deps
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" tests/integration/install-servers.sh
	$(VENV)/bin/pytest -q tests/integration

vm: host-deps
	vagrant/vm build

e2e: host-deps
	vagrant/vm run --timeout $(E2E_TIMEOUT) -- \
		python -m pytest -v -p no:cacheprovider tests/e2e

demo: host-deps
	vagrant/vm demo

clean:
	rm -rf $(VENV) .vm .cache
