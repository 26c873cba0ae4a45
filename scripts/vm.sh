#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boot the test kernel under QEMU (TCG) with an initramfs holding busybox,
# the modules and the test programs, in one of these modes:
#   test       load hmm_rs, run the KUnit suites and user-space tests, judge
#   stock      the user-space tests on another kernel (HMMRS_KERNEL_IMAGE,
#              with KDIR the tree the modules were built in): Debian's own
#   demo       load hmm_rs and show what it does on the console
#   trace      the demo with the hmm_rs: tracepoints on, then the trace
#   stress     the storm, the fuzzer and the injected storm (STRESS_S=600)
#   shell      load hmm_rs and give an interactive shell
#   bench      the page-table benchmark and the end-to-end benchmark
#              (hmm_dummy, then test_hmm.ko); boot the performance kernel
#              for it (HMMRS_KERNEL=perf)
#   bench-short  the end-to-end benchmark, small (make test)
#   reference  run the upstream hmm-tests against the kernel's test_hmm.ko
#   dummy-reference  the same against hmm_rs + hmm_dummy
#   dma        q35 + Intel IOMMU + two QEMU edu devices: our suites and
#              hmm-tests against hmm_dummy edu=1 (DMA-mapped mirrors)
#   bench-dma  fault + DMA-map cost, 4 KiB and THP (HMMRS_IOMMU=0: no IOMMU)
#   loop       one hmm-tests test many times, with the invalidations traced
#              (HMMRS_LOOP=TEST,N,DRIVER; make loop)
# Expects scripts/build.sh to have run. In test and reference modes, the
# exit status says whether everything passed (see scripts/judge.py).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"

mode=${1:-test}
kdir=$(kdir)
bzimage=${HMMRS_KERNEL_IMAGE:-$kdir/arch/x86/boot/bzImage}
[ -f "$bzimage" ] || die "no $bzimage: run scripts/build.sh"
gen_cpio=$kdir/usr/gen_init_cpio
[ -x "$gen_cpio" ] || die "no $gen_cpio (the kernel needs CONFIG_BLK_DEV_INITRD)"

# HMMRS_VM_NAME: the run's directory, when one mode runs on several kernels.
run=$CACHE/vm/${HMMRS_VM_NAME:-$mode}
rm -rf "$run"
mkdir -p "$run"

# The initramfs, described in the kernel's own gen_init_cpio format.
{
	for d in /bin /dev /proc /sys /tmp /modules /tests /demo /bench /stress /upstream; do
		echo "dir $d 0755 0 0"
	done
	echo "nod /dev/console 0600 0 0 c 5 1"
	echo "file /bin/busybox $(command -v busybox) 0755 0 0"
	echo "file /init $here/guest-init.sh 0755 0 0"
	for m in "$OUT"/modules/*.ko "$kdir"/lib/test_hmm.ko; do
		[ -f "$m" ] && echo "file /modules/$(basename "$m") $m 0644 0 0"
	done
	for t in "$OUT"/tests/* "$OUT"/demo/* "$OUT"/bench/* "$OUT"/stress/* "$OUT"/upstream/*; do
		[ -f "$t" ] && echo "file /${t#"$OUT"/} $t 0755 0 0"
	done
} > "$run/initramfs.list"
"$gen_cpio" "$run/initramfs.list" > "$run/initramfs.cpio"

# hugepages=32: 64 MiB of hugetlbfs pages reserved at boot for the
# hugetlbfs tests of hmm-tests; memmap=512M$1G keeps 1 GiB..1.5 GiB out of
# System RAM, the device-coherent memory of test_hmm and hmm_dummy
# (guest-init.sh passes its address).
# Every vCPU QEMU gives is online (the kernels read ACPI): two for the
# suites and benchmarks (the host has two cores), four for the storms
# (HMMRS_SMP), which interleave more the more CPUs there are.
smp=${HMMRS_SMP:-2}
[ "$mode" = stress ] && smp=${HMMRS_SMP:-4}
qemu=(qemu-system-x86_64 -accel tcg -cpu max -smp "$smp" -m 3G -no-reboot
      -kernel "$bzimage" -initrd "$run/initramfs.cpio"
      -append "console=ttyS0 panic=-1 hmmrs.cpus=$smp hugepages=32 memmap=512M\$0x40000000 hmmrs.mode=$mode${STRESS_S:+ hmmrs.stress_s=$STRESS_S}${HMMRS_PROFILE:+ hmmrs.profile=$HMMRS_PROFILE}${HMMRS_BENCH_ARGS:+ hmmrs.bench_args=$HMMRS_BENCH_ARGS}${HMMRS_DMA_FULL:+ hmmrs.dma_full=1}${HMMRS_DMA_ONLY:+ hmmrs.dma_only=1}${HMMRS_QUICK:+ hmmrs.quick=1}${HMMRS_LOOP:+ hmmrs.loop=$HMMRS_LOOP}")

# dma: a q35 machine with an Intel IOMMU (VT-d, what x86 machines with GPUs
# have; its faults are logged by the guest's DMAR driver, which makes it the
# oracle for stale DMA addresses) and two QEMU edu devices, whose DMA
# engines hmm_dummy edu=1 drives. An edu transfer completes 100 ms of
# QEMU's virtual clock after it starts: with -icount sleep=off that clock
# jumps to the next timer whenever the guest idles (as it does waiting for
# the transfer's interrupt), instead of the guest waiting 100 ms of real
# time per 4 KiB (which also makes the guest's clock jump 100 ms per
# transfer: hmm_dummy copies large accesses by the CPU, see edu_max_pages).
# HMMRS_IOMMU=0: the same machine without the IOMMU (the benchmark's other
# half). HMMRS_DMA_ONLY=1: tests/dma_iommu.c alone (quick, while working).
# After the command line, which the cases above append to.
edu=(-device "edu,dma_mask=0xffffffffffffffff" -device "edu,dma_mask=0xffffffffffffffff")
case "$mode" in
dma | bench-dma)
	qemu+=(-machine q35 "${edu[@]}")
	[ "${HMMRS_IOMMU:-1}" = 0 ] || qemu+=(-device intel-iommu)
	# The benchmark moves no data with the engines: real time, both vCPUs.
	[ "$mode" = dma ] && qemu+=(-icount "shift=0,sleep=off")
	;;
esac

case "$mode" in
test | stock | stress | reference | dummy-reference | dma)
	timeout=${HMMRS_VM_TIMEOUT:-900}
	# test: hmm-tests and the short stress against hmm_dummy, then again
	# against rust_dmirror (about 7 min of the 2-vCPU guest's time before).
	[ "$mode" = test ] && timeout=${HMMRS_VM_TIMEOUT:-1200}
	[ "$mode" = stress ] && timeout=$((${STRESS_S:-600} * 2 + 900))
	[ "$mode" = dma ] && timeout=${HMMRS_VM_TIMEOUT:-1500}
	for attempt in 1 2 3; do
		log "booting the VM ($mode), console in $run/console.log"
		rc=0
		timeout "$timeout" "${qemu[@]}" -display none -monitor none \
			-serial "file:$run/console.log" -serial "file:$run/results.log" \
			< /dev/null || rc=$?
		[ $rc -eq 124 ] && log "the VM did not finish within ${timeout}s: killed"
		rc=0
		jargs=()
		[ "$mode" = dma ] && [ -n "${HMMRS_DMA_ONLY:-}" ] && jargs+=(--manifest dma-only)
		[ -n "${HMMRS_PARITY_WITH:-}" ] && jargs+=(--parity-with "$HMMRS_PARITY_WITH")
		python3 "$here/judge.py" --ksrc "$(ksrc)" --mode "$mode" "${jargs[@]}" \
			--console "$run/console.log" --results "$run/results.log" \
			--counts "$run/counts" || rc=$?
		# A report from the booting kernel, before any of our code ran, is
		# the emulated machine's: boot again, at most twice, and say so.
		# Three in a row fail.
		if [ $rc -eq 3 ] && [ $attempt -lt 3 ]; then
			cp "$run/console.log" "$run/console.boot-failure-$attempt.log"
			log "retrying: the kernel reported a bug while booting (kept in console.boot-failure-$attempt.log)"
			continue
		fi
		[ $rc -eq 3 ] && rc=1
		exit $rc
	done
	;;
loop)
	# An investigation, printed, not judged.
	log "booting the $FLAVOUR kernel (loop: $HMMRS_LOOP), console in $run/console.log"
	timeout "${HMMRS_VM_TIMEOUT:-3600}" "${qemu[@]}" -display none -monitor none \
		-serial "file:$run/console.log" -serial "file:$run/results.log" < /dev/null || true
	cat "$run/results.log"
	python3 "$here/judge.py" --reports-only --console "$run/console.log" || true
	;;
bench | bench-short | bench-dma)
	# Printed, not judged, but the benchmark checks the data it moves: a
	# "FAIL:" line, a kernel report or an unfinished run fails.
	log "booting the $FLAVOUR kernel ($mode), console in $run/console.log"
	[ "$FLAVOUR" = perf ] || log "note: not the performance kernel; ratios are distorted"
	rc=0
	timeout "${HMMRS_VM_TIMEOUT:-1800}" "${qemu[@]}" -display none -monitor none \
		-serial "file:$run/console.log" -serial "file:$run/results.log" < /dev/null || rc=$?
	[ $rc -eq 124 ] && log "the VM did not finish in time: killed"
	cat "$run/results.log"
	python3 "$here/judge.py" --bench --mode "$mode" --console "$run/console.log" \
		--results "$run/results.log" --counts "$run/counts" || die "the benchmark failed (see above)"
	;;
demo | trace | shell)
	# Quiet boot: the guest prints what matters itself.
	qemu[-1]+=" quiet"
	exec "${qemu[@]}" -nographic -serial mon:stdio -serial null
	;;
*)
	die "unknown mode '$mode' (test, stock, stress, demo, trace, shell, bench, bench-short, bench-dma, reference, dummy-reference, dma)"
	;;
esac
