#!/usr/bin/env bash
# Proves that a fresh Debian machine builds bpfwall with nothing but the project's own setup.
#
#   fresh-root.sh bookworm   a clean bookworm root (mmdebstrap minbase): scripts/setup-system.sh,
#                            then make build and make wheel, then `bpfwall check` of the example
#                            rule file with the venv that make made
#   fresh-root.sh trixie     a clean Debian 13 root: setup, then the BPF objects built with
#                            trixie's clang; back on this host those objects are loaded into this
#                            kernel and run the data-plane smoke tests under BPF_PROG_TEST_RUN
#
# The minbase roots are made once and kept as tarballs in $BPFWALL_CI_CACHE (default
# /var/cache/bpfwall-ci), with apt's and pip's download caches beside them, so a machine pays for
# the bases once; every run unpacks a clean copy, and what setup installs it installs anew.
# Needs root (chroot, mounts). Everything happens in a private mount namespace, so nothing stays
# mounted whatever happens; the unpacked root is removed at the end, pass or fail.
set -euo pipefail

suite=${1:?usage: fresh-root.sh bookworm|trixie}
case "$suite" in bookworm | trixie) ;; *) echo "fresh-root: unknown suite '$suite'" >&2; exit 2 ;; esac
top=$(cd "$(dirname "$0")/.." && pwd)
cache=${BPFWALL_CI_CACHE:-/var/cache/bpfwall-ci}
mirror=${BPFWALL_CI_MIRROR:-http://deb.debian.org/debian}
base="$cache/$suite-minbase.tar"

command -v mmdebstrap >/dev/null || {
  echo "fresh-root: installing mmdebstrap"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap >/dev/null
}
mkdir -p "$cache/apt-$suite" "$cache/pip"
if [ ! -f "$base" ] || [ ! -s "$base" ]; then
  echo "fresh-root: making the $suite minbase root (once; cached in $base)"
  # A half-made base (or a directory where one should be) is made again.
  rm -rf --one-file-system "$base" "$base.part"
  # --format: mmdebstrap takes the format from the name's extension, and ".part" has none it
  # knows, so without it the "tarball" was a directory and every later run failed to unpack it.
  mmdebstrap --quiet --variant=minbase --format=tar "$suite" "$base.part" "$mirror"
  mv "$base.part" "$base"
fi

root=$(mktemp -d "/var/tmp/bpfwall-fresh-$suite.XXXXXX")
trap 'rm -rf --one-file-system "$root"' EXIT
tar -C "$root" -xf "$base"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The certificate authorities this machine trusts (a network may inspect TLS on the way to the
# package index): the root's pip trusts what the machine's own tools trust.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/bpfwall-ci-ca.crt"
# Only what git tracks: a fresh clone has no .venv, no objects, no caches.
mkdir -p "$root/src/bpfwall"
git -C "$top" ls-files -z --cached --others --exclude-standard |
  tar -C "$top" --null -T - -cf - | tar -C "$root/src/bpfwall" -xf -

case "$suite" in
  bookworm)
    inside='scripts/setup-system.sh && make build wheel &&
      .venv/bin/bpfwall check -f contrib/bpfwall.yaml && ls build/wheel/bpfwall-*.whl' ;;
  trixie)
    inside='scripts/setup-system.sh && make build && clang --version | head -n 1' ;;
esac

# A private mount namespace: /proc, /dev and the caches are mounted for the chroot only, and go
# when it ends. No /sys/fs/bpf inside: nothing in the root touches this kernel.
unshare --mount --propagation private -- /bin/bash -euo pipefail -c '
  root=$1 cache=$2 suite=$3 inside=$4
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mkdir -p "$root/var/cache/apt/archives" "$root/root/.cache/pip"
  mount --bind "$cache/apt-$suite" "$root/var/cache/apt/archives"
  mount --bind "$cache/pip" "$root/root/.cache/pip"
  # minbase deletes downloaded packages after installing them; keep them for the next run.
  echo "Binary::apt::APT::Keep-Downloaded-Packages \"true\";" > "$root/etc/apt/apt.conf.d/90keep"
  rm -f "$root/etc/apt/apt.conf.d/docker-clean"
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    PIP_CERT=/etc/bpfwall-ci-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    /bin/bash -euo pipefail -c "cd /src/bpfwall && $inside"
' fresh-root "$root" "$cache" "$suite" "$inside"

if [ "$suite" = trixie ]; then
  # The objects trixie's clang built, loaded into this kernel by this checkout's Python.
  # Kept in the cache for a look after a failure: the root itself is removed.
  objects="$cache/trixie-objects"
  rm -rf "$objects" && mkdir -p "$objects"
  cp "$root"/src/bpfwall/src/bpfwall/bpf/*.bpf.o "$objects/"
  venv="$top/.venv/bin"
  [ -x "$venv/pytest" ] || { echo "fresh-root: run 'make venv' first (the smoke test uses it)" >&2; exit 1; }
  echo "fresh-root: the trixie objects under BPF_PROG_TEST_RUN on $(uname -r)"
  BPFWALL_OBJECT="$objects/bpfwall.bpf.o" BPFWALL_DISPATCH_OBJECT="$objects/dispatch.bpf.o" \
    "$venv/pytest" -q -p no:cacheprovider "$top/tests/dataplane/test_features.py" \
    "$top/tests/dataplane/test_btf.py"
fi
echo "fresh-root: $suite OK"
