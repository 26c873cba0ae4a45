# SPDX-License-Identifier: GPL-2.0
#
# hmm-rs front door. Kbuild (file Kbuild) builds the module itself; these
# targets provision the machine, build, and drive the test VM:
#
#   make test       host checks, build, KUnit + user-space tests in the VM
#   make demo       boot the VM with hmm_rs loaded and show it working
#   make trace      the same demo with the hmm_rs: tracepoints on, and the trace
#   make stress     the storm (STRESS_S seconds, default 600), the ioctl fuzzer
#                   and the storm with allocation failures injected, on the
#                   test kernel, then a kmemleak scan
#   make shell      the same VM with an interactive shell
#   make bench      the benchmarks on the performance kernel: hmm_pt vs
#                   XArray, and hmm_dummy vs test_hmm.ko end to end
#                   (HMMRS_PROFILE=1: with ftrace's function profile), and
#                   what DMA-mapping mirrors costs, IOMMU on and off
#   make dma        the DMA VM alone: q35, Intel IOMMU, QEMU edu devices,
#                   our suites and hmm-tests on hmm_dummy edu=1
#   make reference  the kernel's own hmm-tests against lib/test_hmm.ko
#   make dummy-reference  the same hmm-tests against hmm_rs + hmm_dummy
#   make loop       one hmm-tests test N times on two CPUs, the invalidations
#                   it got traced by task (TEST=hmm.hmm_device_private.
#                   anon_write_child N=100 DRIVER=hmm_dummy|test_hmm;
#                   STOCK=7.3|7.2: on Debian's kernel instead; NOTRACE=1, or
#                   COMM=khugepaged: only the events that task sent)
#   make modules    build the modules (KDIR=/your/rust/kernel/build to pick
#                   your own Rust-enabled kernel build tree)
#   make stock      test on Debian's stock 7.3 kernel (RELEASE=..., default:
#                   the running one if it is one, else the newest)
#   make install    build for a Debian kernel (RELEASE=..., default: the
#                   running one) and install into /lib/modules/RELEASE/updates
#
# Build products and the test kernel live in $(HMM_RS_CACHE), by default
# ~/.cache/hmm-rs, never in the source tree.

.PHONY: all modules provision test stock install demo trace stress shell bench reference dummy-reference dma loop clean

all: modules

provision:
	scripts/provision.sh

modules: provision
	scripts/build.sh

test:
	scripts/test.sh

stock: provision
	scripts/stock.sh $(RELEASE)

install:
	scripts/install.sh $(RELEASE)

demo trace shell reference dummy-reference: modules
	scripts/vm.sh $@

dma: modules
	HMMRS_DMA_FULL=1 HMMRS_VM_TIMEOUT=2400 scripts/vm.sh dma

LOOP = HMMRS_LOOP=$(or $(TEST),hmm.hmm_device_private.anon_write_child),$(or $(N),100),$(or $(DRIVER),hmm_dummy)$(if $(NOTRACE),$(comma)notrace)$(if $(COMM),$(comma)comm=$(COMM))
comma := ,
loop: provision
ifeq ($(STOCK),)
	scripts/build.sh
	$(LOOP) scripts/vm.sh loop
else
	$(LOOP) HMMRS_STOCK_MODE=loop scripts/stock.sh latest$(if $(filter 7.2,$(STOCK)),-7.2)
endif

stress: modules
	STRESS_S=$(or $(STRESS_S),600) scripts/vm.sh stress

bench: provision
	HMMRS_KERNEL=perf scripts/build.sh
	HMMRS_KERNEL=perf scripts/vm.sh bench
	HMMRS_KERNEL=perf HMMRS_VM_NAME=bench-dma-iommu scripts/vm.sh bench-dma
	HMMRS_KERNEL=perf HMMRS_VM_NAME=bench-dma-direct HMMRS_IOMMU=0 scripts/vm.sh bench-dma

clean:
	. scripts/common.sh && rm -rf "$$OUT" "$$OUT"-* "$$CACHE/vm" "$$CACHE/dkms"
