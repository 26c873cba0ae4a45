#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build (or reuse) a kernel of Debian's linux-source-7.3, configured as
# allnoconfig + scripts/hmm-rs.config + the flavour's fragment, built out of
# tree in the cache:
#   kernel.sh [debug]  the test kernel (hmm-rs-debug.config: KASAN, lockdep)
#   kernel.sh perf     the performance kernel (hmm-rs-perf.config: no debug
#                      options), which the benchmarks boot
# (default: $HMMRS_KERNEL, else debug). Rebuilt only when a fragment, this
# script, the toolchain or the kernel source package changes. Prints the
# build directory on stdout.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
[ $# -gt 0 ] && export HMMRS_KERNEL=$1
. "$here/common.sh"

extract_source
srcver=$(source_version)
mkdir -p "$CACHE"
fragment=$CACHE/kernel-$FLAVOUR.config
cat "$here/hmm-rs.config" "$here/hmm-rs-$FLAVOUR.config" > "$fragment"

inputs=$( {
	echo "$srcver"
	cat "$fragment" "$here/kernel.sh"
	rustc --version; bindgen --version; clang-19 --version | head -n1
	echo "${KMAKE_ARGS[*]}"
	echo "$LIBCLANG_PATH"
} | sha256sum | cut -d' ' -f1)

if [ -f "$KBUILD/.hmm-rs-inputs" ] && [ "$(cat "$KBUILD/.hmm-rs-inputs")" = "$inputs" ] &&
   [ -f "$KBUILD/arch/x86/boot/bzImage" ]; then
	echo "$KBUILD"
	exit 0
fi

log "building the $FLAVOUR kernel in $KBUILD (a few minutes)"
rm -rf "$KBUILD"
mkdir -p "$KBUILD"
kmake() { make -s -C "$KSRC" O="$KBUILD" "${KMAKE_ARGS[@]}" -j"$(nproc)" "$@"; }
KCONFIG_ALLCONFIG="$fragment" kmake allnoconfig >&2
kmake rustavailable >&2 || die "the Rust toolchain is not usable for this kernel"

# allnoconfig silently drops options whose dependencies are unmet: refuse that.
bad=0
while IFS= read -r line; do
	case "$line" in CONFIG_*=*) ;; *) continue ;; esac
	grep -qxF "$line" "$KBUILD/.config" || { log "config: wanted $line, got: $(grep "^${line%%=*}=" "$KBUILD/.config" || echo unset)"; bad=1; }
done < "$fragment"
[ $bad -eq 0 ] || die "kernel config fragment not applied"

kmake bzImage modules >&2
kmake headers_install >&2
echo "$inputs" > "$KBUILD/.hmm-rs-inputs"
echo "$KBUILD"
