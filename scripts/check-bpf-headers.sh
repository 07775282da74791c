#!/usr/bin/env bash
# Fails unless every header in bpf/ compiles on its own, included first in an empty
# file: each says what it needs, so it can be used, read and tested by itself.
# Usage: check-bpf-headers.sh CFLAGS... -- HEADER...
set -euo pipefail
flags=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do flags+=("$1"); shift; done
shift || true
status=0
for header in "$@"; do
  if ! printf '#include "%s"\n' "$(basename "$header")" |
      clang "${flags[@]}" -I"$(dirname "$header")" -fsyntax-only -x c -; then
    echo "$header does not compile on its own (above)" >&2
    status=1
  fi
done
exit $status
