#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The test command: host-side checks, build, then the KUnit suites and the
# user-space tests in the VM. Ends with "N passed, N failed, N skipped"
# counting every check, KUnit case and user-space test; exits non-zero on
# any failure.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
. "$here/common.sh"

passed=0 failed=0 skipped=0
check() {
	local name=$1
	shift
	if "$@"; then
		passed=$((passed + 1))
		echo "ok: $name"
	else
		failed=$((failed + 1))
		echo "FAIL: $name"
	fi
}
finish() {
	echo "$passed passed, $failed failed, $skipped skipped"
	[ "$failed" -eq 0 ]
	exit
}

"$here/provision.sh" || { failed=$((failed + 1)); echo "FAIL: provisioning"; finish; }

# The build comes first: it unpacks the kernel tree whose tools check the rest.
if ! CLIPPY=1 "$here/build.sh"; then
	failed=$((failed + 1))
	echo "FAIL: build (kernel, modules with clippy, test programs)"
	finish
fi
passed=$((passed + 1))
echo "ok: build (kernel, modules with clippy, test programs)"

# Host-side checks with the kernel's own rustfmt settings and checkpatch.
mapfile -t rsrc < <(cd "$repo" && git ls-files --cached --others --exclude-standard '*.rs' | sed "s|^|$repo/|")
check "rustfmt" rustfmt --check --edition 2021 --config-path "$(ksrc)/.rustfmt.toml" "${rsrc[@]}"
check "shellcheck" shellcheck -x -P "$here" "$here"/*.sh "$repo"/.ci/run
csrc=("$repo"/*.c "$repo"/rust/*.c "$repo"/tests/*.c "$repo"/tests/kernel/*.c "$repo"/tests/demo/*.c "$repo"/tests/bench/*.c)
csrc+=("$repo"/hmm_rs.h "$repo"/hmm_shim.h "$repo"/rust/*.h)
check "checkpatch" perl "$(ksrc)/scripts/checkpatch.pl" --no-tree --quiet --strict -f "${csrc[@]}"
# TRACE_EVENT()'s layout, as in include/trace/events/, is what --strict's
# alignment checks misread: the events' header gets the default checks.
check "checkpatch (trace events)" perl "$(ksrc)/scripts/checkpatch.pl" --no-tree --quiet -f "$repo"/hmm_rs_events.h

# Adds the counts a VM run left (scripts/judge.py wrote them).
vm_counts() {
	local counts=$CACHE/vm/$1/counts p f s
	if [ -f "$counts" ]; then
		read -r p f s < "$counts"
		passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
	else
		failed=$((failed + 1))
		echo "FAIL: the VM run ($1) produced no results"
	fi
}

rm -f "$CACHE"/vm/*/counts
# The kernel's lib/test_hmm.ko under hmm-tests, in a boot of its own (what
# it makes the kernel report is its own); the test boot's judge compares
# (parity: hmm_dummy passes every test it passes).
HMMRS_QUICK=1 "$here/vm.sh" reference
vm_counts reference
HMMRS_PARITY_WITH=$CACHE/vm/reference/results.log "$here/vm.sh" test
vm_counts test
# DMA-mapped mirrors on QEMU edu devices behind an Intel IOMMU (the same
# test kernel and modules, another machine).
"$here/vm.sh" dma
vm_counts dma

# Debian's stock kernels, the newest 7.3 and the newest 7.2: prepare a tree
# for each, build (also through DKMS), boot Debian's image and run the
# user-space suites and that kernel's own hmm-tests; then stage 'make
# install' for the 7.3 one.
if "$here/stock.sh" latest; then :; fi
vm_counts stock-7.3
if "$here/stock.sh" latest-7.2; then :; fi
vm_counts stock-7.2
# The short end-to-end benchmark on the performance kernel: its table goes
# into the log; the data it moves is checked, its numbers are not; and
# hmm-tests' migration benchmark, a test with a timed assertion.
if HMMRS_KERNEL=perf "$here/build.sh"; then
	HMMRS_KERNEL=perf "$here/vm.sh" bench-short || true
	vm_counts bench-short
else
	failed=$((failed + 1))
	echo "FAIL: build for the performance kernel"
fi
stage=$CACHE/install-stage
rm -rf "$stage"
check "make install (staged) for the Debian kernel" env INSTALL_MOD_PATH="$stage" "$here/install.sh" latest
finish
