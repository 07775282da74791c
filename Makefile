# bpfwall: `make demo` and `make test` work from a fresh machine (as root).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARCH := $(shell uname -m)
OBJ_DIR := src/bpfwall/bpf
BPF_CFLAGS := -O2 -g -Wall -Werror -target bpf -I/usr/include/$(ARCH)-linux-gnu
BPF_HEADERS := $(wildcard bpf/*.h)
OBJECTS := $(OBJ_DIR)/bpfwall.bpf.o $(OBJ_DIR)/dispatch.bpf.o $(OBJ_DIR)/lab.bpf.o
PYTEST_ARGS ?=

.PHONY: all setup system venv build test lint demo bench clean

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

build: system $(OBJECTS)

$(OBJ_DIR)/%.bpf.o: bpf/%.bpf.c $(BPF_HEADERS)
	@mkdir -p $(OBJ_DIR)
	clang $(BPF_CFLAGS) -c $< -o $@

lint: venv
	$(BIN)/ruff check src tests bench
	clang-format --dry-run --Werror bpf/*.c bpf/*.h

test: setup build lint
	$(BIN)/pytest -q $(PYTEST_ARGS) tests

demo: setup build
	$(BIN)/bpfwall demo

bench: setup build
	$(BIN)/bpfwall bench --out bench/results
	$(BIN)/python bench/ctcost.py

clean:
	rm -rf $(VENV) $(OBJ_DIR)/*.o build .pytest_cache .ruff_cache .hypothesis
