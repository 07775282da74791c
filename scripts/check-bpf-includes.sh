#!/usr/bin/env bash
# Fails if a BPF object would include anything but kernel uapi headers, libbpf's
# headers or the project's own: glibc's headers under `clang -target bpf` need
# gnu/stubs-32.h, which a fresh machine lacks (it builds here only by accident).
# Usage: check-bpf-includes.sh CFLAGS... -- SOURCE...
set -euo pipefail
flags=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do flags+=("$1"); shift; done
shift || true
status=0
for src in "$@"; do
  if ! made=$(clang "${flags[@]}" -M "$src"); then
    echo "$src: cannot list its headers (above)" >&2
    status=1
    continue
  fi
  deps=$(printf '%s\n' "$made" | tr ' \\' '\n\n' | grep '^/' || true)
  bad=$(printf '%s\n' "$deps" | grep -Ev '^/usr/include/(linux|asm-generic|bpf)/|^/usr/include/[^/]+-linux-gnu/asm/|^/usr/include/asm/' | grep -v '^$' || true)
  if [ -n "$bad" ]; then
    echo "$src includes headers outside the kernel uapi and libbpf:" >&2
    printf '  %s\n' $bad >&2
    status=1
  fi
done
exit $status
