#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build everything the VM needs: the test kernel (unless KDIR names your
# own Rust-enabled build tree), the hmm-rs modules, our user-space tests and
# the upstream hmm-tests, all into the cache ($OUT). Module build warnings
# (rustc, clippy with CLIPPY=1) are errors.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
. "$here/common.sh"

kdir=${KDIR:-$("$here/kernel.sh")}
kmake_args "$kdir"

mkdir -p "$OUT/module" "$OUT/modules" "$OUT/tests" "$OUT/demo" "$OUT/bench" "$OUT/stress" "$OUT/upstream"
# Nothing from an earlier build may reach the VM if this one fails.
rm -f "$OUT/modules"/*.ko "$OUT/tests"/* "$OUT/demo"/* "$OUT/bench"/* "$OUT/stress"/* "$OUT/upstream"/*
log "building the modules against $kdir"
# MO= keeps the build products out of the source tree.
# HMM_RS_BENCH=1 (the default here): with the benchmarks' debugfs files.
make -s -C "$kdir" M="$repo" MO="$OUT/module" "${KARGS[@]}" ${CLIPPY:+CLIPPY=1} \
	HMM_RS_BENCH="${HMM_RS_BENCH-1}" \
	-j"$(nproc)" modules 2>&1 | tee "$OUT/module/build.log" >&2
[ "${PIPESTATUS[0]}" -eq 0 ] || die "module build failed"
if grep -q 'warning' "$OUT/module/build.log"; then
	die "module build has warnings (see above)"
fi
cp "$OUT/module"/*.ko "$OUT/modules/"

# User-space programs run in the guest: static, against the kernel's uapi
# headers and the kernel's own kselftest harness.
ksrc=$(ksrc)
uapi=$kdir/usr/include
[ -d "$uapi" ] || die "$uapi missing: run 'make headers_install' in $kdir"
cflags=(-static -O2 -Wall -Werror -isystem "$uapi" -I "$ksrc" -I "$ksrc/tools/testing/selftests")
for t in "$repo"/tests/*.c; do
	[ -f "$t" ] || continue
	gcc "${cflags[@]}" -o "$OUT/tests/$(basename "$t" .c)" "$t" -lpthread
done
for t in "$repo"/tests/demo/*.c; do
	gcc "${cflags[@]}" -o "$OUT/demo/$(basename "$t" .c)" "$t"
done
for t in "$repo"/tests/bench/*.c; do
	gcc "${cflags[@]}" -o "$OUT/bench/$(basename "$t" .c)" "$t" -lpthread
done
for t in "$repo"/tests/stress/*.c; do
	gcc "${cflags[@]}" -o "$OUT/stress/$(basename "$t" .c)" "$t" -lpthread
done

# The upstream hmm-tests, unmodified, built as its own Makefile builds it.
mm=$ksrc/tools/testing/selftests/mm
(cd "$mm" && gcc -static -Wall -O2 -U_FORTIFY_SOURCE -no-pie -I "$ksrc" -isystem "$uapi" \
	-isystem "$ksrc/tools/include/uapi" -I "$ksrc/tools/testing/selftests" -o "$OUT/upstream/hmm-tests" \
	hmm-tests.c vm_util.c hugepage_settings.c -lrt -lpthread -lm)
log "built: $(cd "$OUT" && echo modules/* tests/* demo/* bench/* stress/* upstream/*)"
