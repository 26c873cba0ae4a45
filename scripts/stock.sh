#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Test hmm-rs on Debian's stock 7.3 or 7.2 kernel: prepare a build tree for it
# (debian-kernel.sh), build the modules and test programs against that tree,
# boot Debian's own kernel image under QEMU and run the user-space suites
# and the upstream hmm-tests against hmm_dummy there. When dkms is
# installed, the modules the VM loads are the ones 'dkms build' makes from
# dkms.conf (in a private DKMS tree), so the DKMS path is tested too.
#
#   stock.sh [RELEASE]
#
# RELEASE defaults to the running kernel when it is a Debian 7.3 or 7.2
# kernel, else to the newest 7.3 kernel apt knows; "latest-7.2" is the
# newest 7.2 one. The VM runs in $CACHE/vm/stock-SERIES (stock-7.3,
# stock-7.2); exit status and counts file are as for 'vm.sh test'.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"

rel=${1:-}
if [ -z "$rel" ]; then
	case "$(uname -r)" in
	7.3.*+deb* | 7.2.*+deb*) rel=$(uname -r) ;;
	*) rel=latest ;;
	esac
fi
tree=$("$here/debian-kernel.sh" prepare "$rel")
rel=$(cat "$tree/include/config/kernel.release")
image=$("$here/debian-kernel.sh" image "$rel")
log "testing on Debian's kernel $rel ($image)"
# Built as users install it: no benchmark files.
export KDIR=$tree HMM_RS_OUT=$CACHE/out-$rel HMMRS_KERNEL_IMAGE=$image HMM_RS_BENCH=0
export HMMRS_VM_NAME=${HMMRS_STOCK_MODE:+$HMMRS_STOCK_MODE-}stock-${rel%.*+*}
OUT=$HMM_RS_OUT
"$here/build.sh"

if command -v dkms > /dev/null; then
	repo=$(dirname "$here")
	d=$CACHE/dkms
	ver=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$repo/dkms.conf")
	rm -rf "$d"
	mkdir -p "$d/source" "$d/tree"
	rsync -a --exclude .git "$repo/" "$d/source/hmm-rs-$ver/"
	log "dkms build hmm-rs/$ver for $rel (private DKMS tree $d)"
	dkms build "hmm-rs/$ver" -k "$rel" --dkmstree "$d/tree" --sourcetree "$d/source" \
		--kernelsourcedir "$tree" >&2 || die "dkms build failed (log: $d/tree/hmm-rs/$ver/build/make.log)"
	cp "$d/tree/hmm-rs/$ver/$rel/x86_64/module"/*.ko "$OUT/modules/"
	log "the VM loads the modules dkms built"
else
	log "dkms is not installed: the DKMS build is not tested"
fi
# HMMRS_STOCK_MODE=loop (make loop STOCK=...): an investigation instead.
exec "$here/vm.sh" "${HMMRS_STOCK_MODE:-stock}"
