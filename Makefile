# bpfwall: `make demo` and `make test` work from a fresh machine (as root).
# The development venv (make test, make demo) takes the first python3 on PATH; make install
# takes the host's own Python, so that the installed CLI runs for every user, not only for
# the root whose PATH found some other interpreter.
PYTHON ?= python3
HOST_PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
ARCH := $(shell uname -m)
OBJ_DIR := src/bpfwall/bpf
CLANG ?= clang
BPF_CFLAGS := -O2 -g -Wall -Werror -target bpf -I/usr/include/$(ARCH)-linux-gnu
BPF_HEADERS := $(wildcard bpf/*.h)
OBJECTS := $(OBJ_DIR)/bpfwall.bpf.o $(OBJ_DIR)/dispatch.bpf.o $(OBJ_DIR)/lab.bpf.o
# The lab's traffic generator (an AF_PACKET transmit ring), for the demo, the tests and bench.
SENDER := $(OBJ_DIR)/bpfwall-flood
PYTEST_ARGS ?=

# make install: the CLI in its own virtual environment under $(PREFIX)/lib/bpfwall, linked
# into $(PREFIX)/bin; the systemd unit, an example rule file, the man page, bash completion.
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
APPDIR := $(PREFIX)/lib/bpfwall
WHEEL_DIR := build/wheel

.PHONY: all setup system venv build test lint demo bench clean wheel install unit

all: build

setup: system venv

system:
	@scripts/setup-system.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

build: system $(OBJECTS) $(SENDER)

$(OBJ_DIR)/%.bpf.o: bpf/%.bpf.c $(BPF_HEADERS)
	@mkdir -p $(OBJ_DIR)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(SENDER): tools/flood.c
	@mkdir -p $(OBJ_DIR)
	$(CLANG) -O2 -Wall -Werror -o $@ $<

lint: venv
	$(BIN)/ruff check src tests bench
	scripts/check-bpf-includes.sh $(BPF_CFLAGS) -- bpf/*.bpf.c
	scripts/check-bpf-headers.sh $(BPF_CFLAGS) -- bpf/*.h
	clang-format --dry-run --Werror bpf/*.c bpf/*.h tools/*.c

test: setup build lint
	$(BIN)/pytest -q $(PYTEST_ARGS) tests

demo: setup build
	$(BIN)/bpfwall demo

bench: setup build
	$(BIN)/bpfwall bench --out bench/results
	$(BIN)/python bench/ctcost.py
	$(BIN)/python bench/ownercost.py
	$(BIN)/python bench/jumbo.py
	$(BIN)/python bench/fleet.py --hosts 20

# A wheel that carries the compiled BPF objects: installing it needs no clang.
wheel: venv build
	rm -rf $(WHEEL_DIR)
	$(BIN)/pip wheel -q --no-deps -w $(WHEEL_DIR) .

# The systemd unit with this install's paths.
unit: build/bpfwall.service build/bpfwall-agent.service

build/%.service: contrib/systemd/%.service.in
	@mkdir -p build
	sed -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' $< > $@

install: wheel
	rm -f build/bpfwall.service build/bpfwall-agent.service
	$(MAKE) unit
	$(HOST_PYTHON) -m venv --clear $(APPDIR)/venv
	$(APPDIR)/venv/bin/pip install -q $(WHEEL_DIR)/bpfwall-*.whl
	install -d $(PREFIX)/bin $(UNITDIR) $(PREFIX)/share/man/man8 $(PREFIX)/share/man/man5 \
		$(PREFIX)/share/bash-completion/completions $(PREFIX)/share/doc/bpfwall
	ln -sf $(APPDIR)/venv/bin/bpfwall $(PREFIX)/bin/bpfwall
	install -m 0644 build/bpfwall.service $(UNITDIR)/bpfwall.service
	install -m 0644 build/bpfwall-agent.service $(UNITDIR)/bpfwall-agent.service
	install -d -m 0755 $(SYSCONFDIR)/bpfwall
	[ -e $(SYSCONFDIR)/bpfwall/bpfwall.yaml ] || install -m 0644 contrib/bpfwall.yaml $(SYSCONFDIR)/bpfwall/bpfwall.yaml
	$(APPDIR)/venv/bin/python -m bpfwall.manpage > $(PREFIX)/share/man/man8/bpfwall.8
	$(APPDIR)/venv/bin/python -m bpfwall.manpage --rule-language docs/rule-language.md \
		> $(PREFIX)/share/man/man5/bpfwall.yaml.5
	install -m 0644 README.md docs/*.md $(PREFIX)/share/doc/bpfwall/
	_BPFWALL_COMPLETE=bash_source $(APPDIR)/venv/bin/bpfwall > $(PREFIX)/share/bash-completion/completions/bpfwall
	@echo "installed: edit $(SYSCONFDIR)/bpfwall/bpfwall.yaml, then: systemctl daemon-reload && systemctl enable --now bpfwall"

clean:
	rm -rf $(VENV) $(OBJ_DIR)/*.o $(SENDER) build .pytest_cache .ruff_cache .hypothesis
