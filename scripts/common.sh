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
# bindgen's libclang: LLVM 19's where it is installed (provision.sh), else
# whatever bindgen finds (Debian unstable has other LLVM releases).
if [ -z "${LIBCLANG_PATH:-}" ] && [ -d /usr/lib/llvm-19/lib ]; then
	export LIBCLANG_PATH=/usr/lib/llvm-19/lib
fi
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

# Prints the URI of the machine's main Debian archive entry (not -security),
# from deb822 .sources files or one-line sources.list files.
debian_uri() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk '/^URIs:/ { uri = $2 }
		     /^Suites:/ { if ($0 !~ /security/ && uri !~ /security/) { print uri; exit } }' "$f"
	done
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' || true
}

# apt-get/apt-cache with a private state for Debian unstable (packages of
# kernels only unstable has, e.g. 7.2.*+deb14): downloads only, never the
# machine's own sources, whose upgrades must not be pulled towards unstable.
# The archive is this machine's Debian entry's; updated once a day.
unstable_apt() {
	local st=$CACHE/apt-unstable tool=$1 uri
	shift
	if [ ! -f "$st/sources.list" ] || [ -n "$(find "$st/sources.list" -mtime +0)" ]; then
		uri=$(debian_uri | sed -n 1p)
		[ -n "$uri" ] || die "no Debian apt source entry to derive unstable from"
		mkdir -p "$st/lists/partial" "$st/cache/archives/partial"
		printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s unstable main\n' \
			"$uri" > "$st/sources.list"
		unstable_opts "$st"
		log "updating the private apt state for Debian unstable ($st)"
		apt-get "${UNSTABLE_OPTS[@]}" update -qq >&2 || die "apt-get update (unstable) failed"
	fi
	unstable_opts "$st"
	"$tool" "${UNSTABLE_OPTS[@]}" "$@"
}
unstable_opts() {
	UNSTABLE_OPTS=(-o "Dir::Etc::SourceList=$1/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$1/lists" -o "Dir::Cache=$1/cache"
		-o Dir::State::Status=/var/lib/dpkg/status)
	[ "$EUID" -ne 0 ] || UNSTABLE_OPTS+=(-o APT::Sandbox::User=root)
}
