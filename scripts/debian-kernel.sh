#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Debian's stock Rust-enabled kernel, for building hmm-rs against it.
#
#   debian-kernel.sh prepare [RELEASE]   prepare a build tree, print its path
#   debian-kernel.sh image [RELEASE]     fetch the kernel image, print its path
#
# RELEASE is a Debian kernel release such as 7.3.4+deb13-amd64 or
# 7.2.12+deb13-amd64; without one, the running kernel's (when it is a Debian
# kernel); "latest" means the newest 7.3 release apt knows, "latest-7.2" the
# newest 7.2 one.
#
# Debian's headers package carries the kernel's .config and Module.symvers
# but no Rust metadata (rust/*.rmeta, libmacros.so), so no Rust module can be
# built from it as shipped. 'prepare' rebuilds that metadata: it runs
# 'make modules_prepare' on Debian's linux-source-7.3 or -7.2 (the headers'
# own version: the test kernel's sources for 7.3, else fetched and unpacked
# into the cache) with Debian's .config and
# the very rustc release named in it (CONFIG_RUSTC_VERSION_TEXT, installed
# with rustup). RUSTC_FORCE_RUSTC_VERSION makes that rustc report the exact
# version text Debian's did, so crate hashes and mangled symbol names match
# the ones the kernel exports. The tree is kept in the cache and prepared
# again only when one of its inputs changes.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"

usage() { die "usage: $(basename "$0") prepare|image [RELEASE|latest]"; }
[ $# -ge 1 ] || usage
cmd=$1
rel=${2:-}

if [ -z "$rel" ]; then
	rel=$(uname -r)
	case "$rel" in
	*+deb*) ;;
	*) die "the running kernel ($rel) is not a Debian kernel: name a release, e.g. 'latest'" ;;
	esac
elif [ "$rel" = latest ] || [ "${rel#latest-}" != "$rel" ]; then
	want=${rel#latest}
	want=${want#-}
	want=${want:-7.3}
	rel=$(apt-cache search --names-only "^linux-headers-${want//./\\.}\.[0-9.]+\+deb[0-9]+-amd64\$" |
		sed 's/^linux-headers-\([^ ]*\) .*/\1/' | sort -V | tail -n1)
	[ -n "$rel" ] || die "apt knows no linux-headers-$want.*+deb*-amd64 (is trixie-backports listed? see scripts/provision.sh)"
fi
case "$rel" in
*/* | *..*) die "bad release '$rel'" ;;
7.3.* | 7.2.*) ;;
6.*) die "$rel: Linux 6.x kernels (Debian 13's default 6.12) have no CONFIG_RUST and no DEVICE_PRIVATE; hmm-rs needs a 7.2 or 7.3 kernel (trixie-backports)" ;;
*) die "hmm-rs builds for Linux 7.2 and 7.3; $rel is another kernel" ;;
esac
# The kernel series: its sources are linux-source-$series.
[[ "$rel" =~ ^([0-9]+\.[0-9]+)\. ]] && series=${BASH_REMATCH[1]}

deb=$CACHE/debian/$rel

# Unpacks one Debian package into $deb/root (once per package version):
# version $2, or the candidate. Packages already installed on this machine
# are used where they are.
fetch() {
	local pkg=$1 ver=${2:-} apt=(apt-get) known
	# What this machine's apt knows; a kernel of Debian unstable (+deb14)
	# it does not know comes from a private apt state.
	known=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')
	if [ -z "$known" ] || [ "$known" = "(none)" ] ||
	   { [ -n "$ver" ] && ! apt-cache madison "$pkg" 2>/dev/null | awk '{ print $3 }' | grep -qxF "$ver"; }; then
		case "$rel" in
		*+deb14*)
			apt=(unstable_apt apt-get)
			known=$(unstable_apt apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')
			;;
		esac
	fi
	[ -n "$ver" ] || ver=$known
	{ [ -n "$ver" ] && [ "$ver" != "(none)" ]; } ||
		die "package $pkg is unknown to apt: no Debian kernel $rel to be had"
	if [ "$(cat "$deb/.$pkg" 2>/dev/null)" != "$ver" ]; then
		log "fetching $pkg $ver"
		mkdir -p "$deb/root" "$deb/pkg"
		rm -f "$deb/pkg/${pkg}_"*.deb
		# As root, apt would drop to its _apt user, which cannot write here.
		local sandbox=()
		[ "$EUID" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
		(cd "$deb/pkg" && "${apt[@]}" download -qq "${sandbox[@]}" "$pkg=$ver" >&2) ||
			die "cannot download $pkg"
		dpkg-deb -x "$deb/pkg/${pkg}_"*.deb "$deb/root"
		echo "$ver" > "$deb/.$pkg"
	fi
}

case "$cmd" in
image)
	img=/usr/lib/modules/$rel/vmlinuz
	[ -f "$img" ] || { fetch "linux-binary-$rel"; img=$deb/root$img; }
	[ -f "$img" ] || die "linux-binary-$rel holds no $img"
	echo "$img"
	exit 0
	;;
prepare) ;;
*) usage ;;
esac

hdr=/usr/src/linux-headers-$rel
if [ ! -f "$hdr/.config" ]; then
	fetch "linux-headers-$rel"
	hdr=$deb/root$hdr
fi
config=$hdr/.config
{ [ -f "$config" ] && [ -f "$hdr/Module.symvers" ]; } || die "$hdr lacks .config or Module.symvers"

# What hmm-rs needs from the kernel, with the reason given to the user.
need() {
	grep -qx "CONFIG_$1=y" "$config" || die "kernel $rel lacks CONFIG_$1 ($2): hmm-rs cannot be built for it"
}
need RUST "Rust support"
need MMU_NOTIFIER "mmu notifiers"
need HMM_MIRROR "hmm_range_fault"
need ZONE_DEVICE "device memory"
need DEVICE_PRIVATE "device-private memory"

# The rustc release Debian built the kernel with, from its .config.
rustc_text=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT="rustc \(.*\)"$/\1/p' "$config")
rustc_ver=${rustc_text%% *}
[[ "$rustc_ver" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
	die "cannot read the rustc version from $config (CONFIG_RUSTC_VERSION_TEXT)"
command -v rustup > /dev/null || die "rustup is needed to install rustc $rustc_ver (scripts/provision.sh)"
if ! rustup run "$rustc_ver" rustc --version > /dev/null 2>&1 ||
   [ ! -d "$(rustup run "$rustc_ver" rustc --print sysroot)/lib/rustlib/src/rust/library" ]; then
	log "installing rustc $rustc_ver (the release $rel was built with)"
	rustup toolchain install "$rustc_ver" --profile minimal -c rust-src >&2 ||
		die "rustc $rustc_ver, which built $rel, cannot be installed with rustup"
fi
toolchain=$(rustup run "$rustc_ver" rustc --print sysroot)/bin

# The C compiler Debian used (gcc-14 on Debian 13), else this machine's gcc:
# C objects do not carry the compiler into symbol names, Rust ones do.
debcc=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\([^ ]*\) .*/\1/p' "$config")
cc=gcc
for c in "$debcc" "${debcc#x86_64-linux-gnu-}"; do
	[ -n "$c" ] && command -v "$c" > /dev/null && { cc=$c; break; }
done

# The sources must be those of the headers' kernel.
hdrver=$(dpkg-deb -f "$deb/pkg/linux-headers-${rel}_"*.deb Version 2>/dev/null ||
	dpkg-query -W -f='${Version}' "linux-headers-$rel")
if [ "$series" = 7.3 ]; then
	extract_source
	srcver=$(source_version)
	[ "$srcver" = "$hdrver" ] ||
		die "linux-source-7.3 is $srcver but $rel is $hdrver: install linux-source-7.3=$hdrver"
else
	# Another series: its linux-source at the headers' version, unpacked
	# into the cache once per version (kernels of one series may need
	# different ones: 7.2.12 and 7.2.13).
	srcver=$hdrver
	KSRC=$CACHE/sources/$srcver/linux-source-$series
	if [ "$(cat "$KSRC/.hmm-rs-source" 2>/dev/null)" != "$srcver" ]; then
		# The installed package if it is that version, else fetched (the
		# tarball is not kept once unpacked: fetched again if need be).
		tarball=/usr/src/linux-source-$series.tar.xz
		if [ ! -f "$tarball" ] ||
		   [ "$(dpkg-query -W -f='${Version}' "linux-source-$series" 2>/dev/null)" != "$srcver" ]; then
			rm -f "$deb/.linux-source-$series"
			fetch "linux-source-$series" "$hdrver"
			tarball=$deb/root/usr/src/linux-source-$series.tar.xz
		fi
		log "extracting linux-source-$series $srcver"
		rm -rf "$KSRC"
		mkdir -p "${KSRC%/*}"
		tar -C "${KSRC%/*}" -xJf "$tarball"
		rm -f "$deb/root/usr/src/linux-source-$series.tar.xz"
		echo "$srcver" > "$KSRC/.hmm-rs-source"
	fi
fi

tree=$deb/build
args=(O="$tree" CC="$cc" HOSTCC="$cc" RUSTC="$toolchain/rustc" RUSTDOC="$toolchain/rustdoc"
      KERNELRELEASE="$rel")
inputs=$( {
	echo "$rel $srcver $hdrver $cc ${args[*]}"
	"$cc" --version | head -n1; bindgen --version; pahole --version || true
	cat "$config" "$here/debian-kernel.sh"
} | sha256sum | cut -d' ' -f1)
if [ "$(cat "$tree/.hmm-rs-inputs" 2>/dev/null)" != "$inputs" ]; then
	log "preparing $tree for $rel with rustc $rustc_ver and $cc (about a minute)"
	rm -rf "$tree"
	mkdir -p "$tree"
	cp "$config" "$tree/.config"
	export RUSTC_FORCE_RUSTC_VERSION=$rustc_text
	kmake() { make -s -C "$KSRC" "${args[@]}" -j"$(nproc)" "$@" >&2; }
	kmake olddefconfig
	grep -qx 'CONFIG_RUST=y' "$tree/.config" ||
		die "CONFIG_RUST got dropped with rustc $rustc_ver here (try: make -C $KSRC O=$tree rustavailable)"
	kmake modules_prepare
	kmake headers_install
	# The initramfs tool of the test VM.
	"$cc" -O2 -o "$tree/usr/gen_init_cpio" "$KSRC/usr/gen_init_cpio.c"
	cp "$hdr/Module.symvers" "$tree/Module.symvers"
	# Another compiler (gcc-12 on Debian 12) or older tools may lack
	# features the configuration records; only such capability options may
	# differ from Debian's, anything else could change the layout of kernel
	# structures modules see (SCHED_CLASS_EXT, needing pahole, did that).
	"$KSRC/scripts/diffconfig" "$config" "$tree/.config" > "$tree/config-changes" || true
	harmless='^[-+ ](CC|GCC|AS|LD|RUSTC|BINDGEN|PAHOLE|OPENSSL)_|^[-+ ](MODULE_SIG_KEY_TYPE|DEBUG_INFO_COMPRESSED)_'
	if grep -Ev "$harmless" "$tree/config-changes" > "$tree/config-changes.bad"; then
		cat "$tree/config-changes.bad" >&2
		die "the configuration of $rel cannot be reproduced here (options above differ; is pahole installed?)"
	fi
	# How modules are built against this tree (scripts/build.sh reads it).
	printf '%s\n' "${args[@]:1}" "RUSTC_FORCE_RUSTC_VERSION=$rustc_text" > "$tree/.hmm-rs-make-args"
	echo "$inputs" > "$tree/.hmm-rs-inputs"
fi
echo "$tree"
