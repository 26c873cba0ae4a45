# shellcheck shell=bash disable=SC2034
# SPDX-License-Identifier: GPL-2.0
# Shared settings for the hmm-rs scripts; sourced, not run.

# rustup, cargo and the cache live under HOME; derive it if the caller's
# environment lacks it.
export HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
CACHE=${HMM_RS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hmm-rs}
KSRC=$CACHE/linux-source-7.3
# Which cached kernel (scripts/kernel.sh): the test kernel with its bug
# detectors, or the performance kernel without them; each has its own
# build tree and build products.
FLAVOUR=${HMMRS_KERNEL:-debug}
case "$FLAVOUR" in
debug) KBUILD=$CACHE/build ;;
perf) KBUILD=$CACHE/build-perf ;;
*) echo "HMMRS_KERNEL=$FLAVOUR: expected debug or perf" >&2; exit 1 ;;
esac
# The test kernel is built with LLVM (clang, lld): KASAN needs it with Rust.
KMAKE_ARGS=(LLVM=-19)
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}
export PATH=$HOME/.cargo/bin:$PATH

# The kernel build tree in use (KDIR, or the cached one) and its sources:
# O= build trees link to their sources as 'source'.
kdir() { echo "${KDIR:-$KBUILD}"; }
ksrc() {
	local kd
	kd=$(kdir)
	if [ -e "$kd/source" ]; then readlink -f "$kd/source"; else echo "$kd"; fi
}

# Debian's linux-source-7.3, unpacked once per package version into $KSRC.
source_version() { dpkg-query -W -f='${Version}' linux-source-7.3; }
extract_source() {
	local tarball=/usr/src/linux-source-7.3.tar.xz srcver
	[ -f "$tarball" ] || die "$tarball missing: run scripts/provision.sh"
	srcver=$(source_version)
	if [ ! -f "$KSRC/.hmm-rs-source" ] || [ "$(cat "$KSRC/.hmm-rs-source")" != "$srcver" ]; then
		log "extracting linux-source-7.3 $srcver"
		rm -rf "$KSRC"
		mkdir -p "$CACHE"
		tar -C "$CACHE" -xJf "$tarball"
		echo "$srcver" > "$KSRC/.hmm-rs-source"
	fi
}

# Sets KARGS to the make arguments a kernel build tree needs for modules:
# those a tree prepared by debian-kernel.sh records (its compilers, release),
# else the test kernel's. Exports what rustc reads from the environment.
kmake_args() {
	local tree=$1 a
	KARGS=()
	if [ -f "$tree/.hmm-rs-make-args" ]; then
		mapfile -t KARGS < "$tree/.hmm-rs-make-args"
		for a in "${KARGS[@]}"; do
			case "$a" in RUSTC_FORCE_RUSTC_VERSION=*) export "${a?}" ;; esac
		done
	elif [ "$tree" = "$KBUILD" ]; then
		KARGS=("${KMAKE_ARGS[@]}")
	fi
}

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# Build products; each kernel the modules are built for has its own.
OUT=${HMM_RS_OUT:-$CACHE/out${KBUILD#"$CACHE"/build}}
