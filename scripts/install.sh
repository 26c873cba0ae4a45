#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build hmm-rs for a Debian kernel and install it (make install):
#
#   install.sh [RELEASE]
#
# RELEASE defaults to the running kernel. The modules go to
# $INSTALL_MOD_PATH/lib/modules/RELEASE/updates/hmm-rs, then depmod runs;
# INSTALL_MOD_PATH (default empty: this system) allows a staging directory.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"

tree=$("$here/debian-kernel.sh" prepare "${1:-}")
rel=$(cat "$tree/include/config/kernel.release")
# What users install has no benchmark files.
export KDIR=$tree HMM_RS_OUT=$CACHE/out-$rel HMM_RS_BENCH=0
OUT=$HMM_RS_OUT
"$here/build.sh"

root=${INSTALL_MOD_PATH:-}
dest=$root/lib/modules/$rel/updates/hmm-rs
mkdir -p "$dest"
install -m 0644 "$OUT"/modules/hmm_rs.ko "$OUT"/modules/hmm_dummy.ko "$dest/"
depmod -a ${root:+-b "$root"} "$rel"
log "installed into $dest: $(cd "$dest" && echo ./*.ko)"
