# Two commands set everything up on a fresh Debian/Ubuntu machine:
#   make demo   the test VM with a running library and a real backup against it
#   make test   unit tests on the host, then the e2e tests in the VM
#   make install  Thur as systemd services on this machine (packaging/install.sh)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
# gcc + linux-libc-dev: a unit test lays out target_core_user.h with the C compiler.
HOST_PACKAGES := qemu-system-x86 qemu-utils debootstrap e2fsprogs gcc linux-libc-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
E2E_TIMEOUT ?= 3000
E2E_SYSTEMD_TIMEOUT ?= 1200

.PHONY: test unit integration e2e e2e-kernel e2e-systemd demo vm host-deps venv lint clean install

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
	$(VENV)/bin/pip install -q -e '.[dev,otlp]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check .
	@# The units are also verified installed, in the VM (tests/e2e_systemd).
	@if command -v systemd-analyze >/dev/null; then packaging/verify-units.sh; \
	else echo "systemd-analyze not found: the units are verified in the VM only"; fi

unit: venv lint
	$(VENV)/bin/pytest -q tests/unit

# Real object-store servers on 127.0.0.1 (SeaweedFS, fake-gcs-server, Azurite).
integration: venv host-deps
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" tests/integration/install-servers.sh
	$(VENV)/bin/pytest -q tests/integration

vm: host-deps
	vagrant/vm build

# Two boots: the kernel-path tests under the VM's bare init, then the units
# under systemd as PID 1 (installed, enabled, started, stopped with systemctl).
e2e: e2e-kernel e2e-systemd

e2e-kernel: host-deps
	vagrant/vm run --timeout $(E2E_TIMEOUT) -- \
		python -m pytest -v -p no:cacheprovider tests/e2e

e2e-systemd: host-deps
	vagrant/vm run --systemd --timeout $(E2E_SYSTEMD_TIMEOUT) -- \
		python -m pytest -v -p no:cacheprovider tests/e2e_systemd

# The venv /opt/thur, the systemd units, users and groups, default configs in /etc.
install:
	$(SUDO) packaging/install.sh

demo: host-deps
	vagrant/vm demo

clean:
	rm -rf $(VENV) .vm .cache
