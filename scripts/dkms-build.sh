#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The build step of dkms.conf: prepare a build tree for the kernel DKMS
# builds for (debian-kernel.sh: Debian's headers lack the Rust metadata) and
# build the modules into dkms-out/ of the source tree DKMS copied.
#
#   dkms-build.sh KERNELRELEASE
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
. "$here/common.sh"

[ $# -eq 1 ] || die "usage: $(basename "$0") KERNELRELEASE"
tree=$("$here/debian-kernel.sh" prepare "$1")
kmake_args "$tree"
make -C "$tree" M="$repo" MO="$repo/dkms-out" "${KARGS[@]}" -j"$(nproc)" modules
