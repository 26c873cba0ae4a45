// SPDX-License-Identifier: GPL-2.0
/*
 * Device memory under pressure, through hmm_dummy's /dev/hmm_dmirror0
 * (hmm_dummy_uapi.h): memory advice, prefetch, eviction, thrash control
 * and oversubscription.
 *
 * - Advice (HMM_DUMMY_ADVISE, ADVICE_GET): ranges split where new advice
 *   cuts them and merge with equal neighbours, bad requests fail with
 *   EINVAL and change nothing, munmap drops the advice of its range only.
 *   READ_ONLY refuses device writes with EPERM and keeps a COW page shared
 *   with a fork child (its PFN in both processes' pagemap); PREFER_DEVICE
 *   makes a device fault migrate first (the CPU's page table, as
 *   HMM_DMIRROR_SNAPSHOT reports it, shows device pages after it);
 *   HMM_DUMMY_PREFETCH moves the advised parts only, both ways.
 * - Eviction on request (HMM_DUMMY_DEVMEM @evict): the counters move by
 *   what was evicted, and the evicted data comes back intact.
 * - Thrash control (HMM_DUMMY_SET_THRASH): a block pulled back and forth
 *   between device and CPU moves every time without it, and is held in
 *   system memory for most of the alternations with it; the device reads
 *   what the CPU wrote either way.
 * - Oversubscription: a working set of 2 and 4 times the device memory,
 *   migrated 2 MiB at a time, three times over: every step places every
 *   page (eviction makes room), no data is lost; and a process killed
 *   while it evicts others' blocks dies and leaves the device usable.
 *
 * make test runs the suite with hmm_dummy's default device memory
 * (devmem_mib=512 per device) and again with devmem_mib=32: the
 * oversubscription tests need the small one and skip with more than
 * 64 MiB; all others run in both. Every test opens its own mirror and
 * leaves thrash control off.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include <lib/test_hmm_uapi.h>
#include "hmm_dummy_uapi.h"

#define PAGE		4096UL
#define HUGE		(2UL << 20)
#define HUGE_PAGES	(HUGE / PAGE)
#define DEVMEM_MIB	"/sys/module/hmm_dummy/parameters/devmem_mib"
#define SMALL_MIB	64	/* the most device memory oversubscription runs with */

#define DEV		HMM_DUMMY_ADVICE_PREFER_DEVICE
#define SYS		HMM_DUMMY_ADVICE_PREFER_SYSTEM
#define RO		HMM_DUMMY_ADVICE_READ_ONLY

/* Each 8-byte word of page @k of a buffer filled with @seed. */
static unsigned long long word(unsigned int seed, unsigned long k)
{
	return (unsigned long long)seed << 32 | k;
}

static void fill_page(char *page, unsigned int seed, unsigned long k)
{
	unsigned long long *w = (void *)page;
	unsigned long i;

	for (i = 0; i < PAGE / sizeof(*w); i++)
		w[i] = word(seed, k);
}

/* Pages @k0.. of a set, @n of them at @p, filled with @seed. */
static void fill_pages(char *p, unsigned long k0, unsigned long n, unsigned int seed)
{
	unsigned long i;

	for (i = 0; i < n; i++)
		fill_page(p + i * PAGE, seed, k0 + i);
}

/*
 * The first of the @n pages at @p, pages @k0.. of a set, that does not
 * hold its page of seed gen[k] (of @seed for all if @gen is NULL), counted
 * from @p; -1 if all do.
 */
static long pages_differ(const char *p, unsigned long k0, unsigned long n, unsigned int seed,
			 const unsigned int *gen)
{
	unsigned long i, j;

	for (i = 0; i < n; i++) {
		const unsigned long long *w = (const void *)(p + i * PAGE);
		unsigned long long want = word(gen ? gen[k0 + i] : seed, k0 + i);

		for (j = 0; j < PAGE / sizeof(*w); j++)
			if (w[j] != want)
				return i;
	}
	return -1;
}

/*
 * Anonymous memory, 2 MiB aligned (so that its blocks are the core's 2 MiB
 * windows and thrash control's blocks), of THPs if @huge, else of 4 KiB
 * pages.
 */
static char *map_aligned(unsigned long bytes, int huge)
{
	char *p = mmap(NULL, bytes + HUGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *a;

	if (p == MAP_FAILED)
		return NULL;
	a = (char *)(((uintptr_t)p + HUGE - 1) & ~(HUGE - 1));
	if (a > p)
		munmap(p, a - p);
	munmap(a + bytes, p + HUGE - a);
	madvise(a, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	return a;
}

/* A lib/test_hmm_uapi.h command: 0 or -errno; @cpages (if not NULL) what it says. */
static int dmirror(int fd, unsigned long req, void *addr, void *ptr, unsigned long npages,
		   __u64 *cpages)
{
	struct hmm_dmirror_cmd cmd = {
		.addr = (uintptr_t)addr, .ptr = (uintptr_t)ptr, .npages = npages,
	};
	int ret = ioctl(fd, req, &cmd) ? -errno : 0;

	if (cpages)
		*cpages = cmd.cpages;
	return ret;
}

/*
 * How many of the @n pages at @addr the CPU maps as this device's private
 * memory (HMM_DMIRROR_SNAPSHOT; the memory type is the high nibble, beside
 * the READ/WRITE/PMD bits hmm-tests ORs into its expected values), or
 * -errno.
 */
static long device_pages(int fd, void *addr, unsigned long n)
{
	unsigned char *m = malloc(n);
	unsigned long i;
	long ret, count = 0;

	if (!m)
		return -ENOMEM;
	ret = dmirror(fd, HMM_DMIRROR_SNAPSHOT, addr, m, n, NULL);
	for (i = 0; ret == 0 && i < n; i++)
		count += m[i] != HMM_DMIRROR_PROT_ERROR &&
			 (m[i] & 0xf0) == HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL;
	free(m);
	return ret ? ret : count;
}

static int advise(int fd, uintptr_t addr, unsigned long npages, unsigned int flags)
{
	struct hmm_dummy_advice a = { .addr = addr, .npages = npages, .flags = flags };

	return ioctl(fd, HMM_DUMMY_ADVISE, &a) ? -errno : 0;
}

static int prefetch(int fd, void *addr, unsigned long npages, __u64 *moved)
{
	struct hmm_dummy_advice a = { .addr = (uintptr_t)addr, .npages = npages };
	int ret = ioctl(fd, HMM_DUMMY_PREFETCH, &a) ? -errno : 0;

	*moved = a.moved;
	return ret;
}

static int set_thrash(int fd, unsigned int window_us, unsigned int backoff_us)
{
	struct hmm_dummy_thrash t = { .window_us = window_us, .backoff_us = backoff_us };

	return ioctl(fd, HMM_DUMMY_SET_THRASH, &t) ? -errno : 0;
}

/* The device memory's counters, after evicting @evict pages first. */
static int devmem(int fd, unsigned long evict, struct hmm_dummy_devmem *d)
{
	memset(d, 0, sizeof(*d));
	d->evict = evict;
	return ioctl(fd, HMM_DUMMY_DEVMEM, d) ? -errno : 0;
}

/* hmm_dummy's devmem_mib, or -1. */
static long devmem_mib(void)
{
	FILE *f = fopen(DEVMEM_MIB, "r");
	long v = -1;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/* The PFN /proc/<pid>/pagemap gives for @addr (pid 0: ours), 0 if not present. */
static __u64 pfn_of(pid_t pid, const void *addr)
{
	char path[64];
	__u64 e = 0;
	int fd;

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	else
		snprintf(path, sizeof(path), "/proc/self/pagemap");
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	if (pread(fd, &e, sizeof(e), (uintptr_t)addr / PAGE * sizeof(e)) != sizeof(e))
		e = 0;
	close(fd);
	return e >> 63 ? e & ((1ULL << 55) - 1) : 0;
}

FIXTURE(devmem)
{
	int fd;
	long mib;		/* devmem_mib */
	char *buf;		/* the test's buffer, unmapped at teardown */
	unsigned long size;
	pid_t child;		/* a child still to kill at teardown */
};

FIXTURE_SETUP(devmem)
{
	self->fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_GE(self->fd, 0);
	self->mib = devmem_mib();
	ASSERT_GT(self->mib, 0) TH_LOG("no %s: hmm_dummy without devmem_mib", DEVMEM_MIB);
	/* Off, whatever an earlier run left. */
	ASSERT_EQ(set_thrash(self->fd, 0, 0), 0);
}

FIXTURE_TEARDOWN(devmem)
{
	if (self->child > 0) {
		kill(self->child, SIGKILL);
		waitpid(self->child, NULL, 0);
	}
	set_thrash(self->fd, 0, 0);
	if (self->buf)
		munmap(self->buf, self->size);
	close(self->fd);
}

static void set_buf(struct _test_data_devmem *self, char *buf, unsigned long size)
{
	self->buf = buf;
	self->size = size;
}

/* Page @k of @b's address. */
static uintptr_t pg(const char *b, long k)
{
	return (uintptr_t)b + k * PAGE;
}

/* ADVICE_GET at @addr must say @flags over [@start, @end). */
static void expect_advice(struct __test_metadata *_metadata, int fd, uintptr_t addr,
			  unsigned int flags, uintptr_t start, uintptr_t end)
{
	struct hmm_dummy_advice a = { .addr = addr, .npages = 12345, .flags = 0xdead };

	ASSERT_EQ(ioctl(fd, HMM_DUMMY_ADVICE_GET, &a), 0) TH_LOG("ADVICE_GET at %#lx", addr);
	EXPECT_EQ(a.flags, flags) TH_LOG("the advice at %#lx", addr);
	EXPECT_EQ(a.addr, start) TH_LOG("the extent's start around %#lx", addr);
	EXPECT_EQ(a.addr + a.npages * PAGE, end) TH_LOG("the extent's end around %#lx", addr);
}

/*
 * New advice cuts what it overlaps, and GET reports each piece with its own
 * extent; advice equal to its neighbours merges with them; the gaps
 * between advised ranges are extents without advice, the last one up to
 * the end of user space; flags 0 clears.
 */
TEST_F(devmem, advice_extents_and_merge)
{
	struct hmm_dummy_advice a = { 0 };
	char *b = map_aligned(HUGE, 0);
	int stack;

	ASSERT_NE(b, NULL);
	set_buf(self, b, HUGE);
	ASSERT_EQ(advise(self->fd, pg(b, 0), 8, RO), 0);
	ASSERT_EQ(advise(self->fd, pg(b, 2), 2, DEV | RO), 0);
	expect_advice(_metadata, self->fd, pg(b, 0), RO, pg(b, 0), pg(b, 2));
	expect_advice(_metadata, self->fd, pg(b, 1), RO, pg(b, 0), pg(b, 2));
	expect_advice(_metadata, self->fd, pg(b, 2), DEV | RO, pg(b, 2), pg(b, 4));
	expect_advice(_metadata, self->fd, pg(b, 3), DEV | RO, pg(b, 2), pg(b, 4));
	expect_advice(_metadata, self->fd, pg(b, 5), RO, pg(b, 4), pg(b, 8));

	/* The middle back to its neighbours' advice: one range again. */
	ASSERT_EQ(advise(self->fd, pg(b, 2), 2, RO), 0);
	expect_advice(_metadata, self->fd, pg(b, 0), RO, pg(b, 0), pg(b, 8));
	expect_advice(_metadata, self->fd, pg(b, 7), RO, pg(b, 0), pg(b, 8));

	/* Gaps: below the first range, between two, above the last. */
	ASSERT_EQ(advise(self->fd, pg(b, 200), 1, SYS), 0);
	expect_advice(_metadata, self->fd, pg(b, 100), 0, pg(b, 8), pg(b, 200));
	expect_advice(_metadata, self->fd, pg(b, 8), 0, pg(b, 8), pg(b, 200));
	expect_advice(_metadata, self->fd, pg(b, 200), SYS, pg(b, 200), pg(b, 201));
	a.addr = 16 * PAGE;
	ASSERT_EQ(ioctl(self->fd, HMM_DUMMY_ADVICE_GET, &a), 0);
	EXPECT_EQ(a.flags, 0);
	EXPECT_LE(a.addr, 16 * PAGE);
	EXPECT_EQ(a.addr + a.npages * PAGE, pg(b, 0));
	a.addr = pg(b, 300);
	ASSERT_EQ(ioctl(self->fd, HMM_DUMMY_ADVICE_GET, &a), 0);
	EXPECT_EQ(a.flags, 0);
	EXPECT_EQ(a.addr, pg(b, 201));
	/* User space ends above our stack. */
	EXPECT_GT(a.addr + a.npages * PAGE, (uintptr_t)&stack);

	/* Flags 0 clears, cutting what it overlaps. */
	ASSERT_EQ(advise(self->fd, pg(b, 3), 2, 0), 0);
	expect_advice(_metadata, self->fd, pg(b, 0), RO, pg(b, 0), pg(b, 3));
	expect_advice(_metadata, self->fd, pg(b, 4), 0, pg(b, 3), pg(b, 5));
	expect_advice(_metadata, self->fd, pg(b, 5), RO, pg(b, 5), pg(b, 8));
}

/* Requests that make no sense fail with EINVAL and leave the advice as it was. */
TEST_F(devmem, advice_einval)
{
	char *b = map_aligned(HUGE, 0);

	ASSERT_NE(b, NULL);
	set_buf(self, b, HUGE);
	ASSERT_EQ(advise(self->fd, pg(b, 0), 4, RO), 0);
	EXPECT_EQ(advise(self->fd, pg(b, 0) + 1, 1, DEV), -EINVAL);
	EXPECT_EQ(advise(self->fd, pg(b, 0), 0, DEV), -EINVAL);
	EXPECT_EQ(advise(self->fd, pg(b, 0), 1, 1U << 3), -EINVAL);
	EXPECT_EQ(advise(self->fd, pg(b, 0), 1, RO | 1U << 7), -EINVAL);
	EXPECT_EQ(advise(self->fd, pg(b, 0), 1, DEV | SYS), -EINVAL);
	/* Beyond user space (with 4- or 5-level page tables), and wrapping. */
	EXPECT_EQ(advise(self->fd, 1UL << 57, 1, DEV), -EINVAL);
	EXPECT_EQ(advise(self->fd, pg(b, 0), 1UL << 52, DEV), -EINVAL);
	EXPECT_EQ(advise(self->fd, pg(b, 0), -1UL, DEV), -EINVAL);
	expect_advice(_metadata, self->fd, pg(b, 0), RO, pg(b, 0), pg(b, 4));
}

/*
 * munmap of part of an advised range drops its advice, which a new mapping
 * there does not get back; the rest keeps it, and so does a page only
 * zapped (MADV_DONTNEED), which is not an unmap. What GET says is what a
 * device write fault gets.
 */
TEST_F(devmem, munmap_drops_advice)
{
	struct hmm_dummy_range r = { .npages = 1, .write = 1 };
	char *b = map_aligned(HUGE, 0);

	ASSERT_NE(b, NULL);
	set_buf(self, b, HUGE);
	fill_pages(b, 0, 8, 1);
	ASSERT_EQ(advise(self->fd, pg(b, 0), 8, RO), 0);
	ASSERT_EQ(munmap(b + 2 * PAGE, 2 * PAGE), 0);
	expect_advice(_metadata, self->fd, pg(b, 2), 0, pg(b, 2), pg(b, 4));
	expect_advice(_metadata, self->fd, pg(b, 0), RO, pg(b, 0), pg(b, 2));
	expect_advice(_metadata, self->fd, pg(b, 4), RO, pg(b, 4), pg(b, 8));

	ASSERT_EQ(mmap(b + 2 * PAGE, 2 * PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0), b + 2 * PAGE);
	expect_advice(_metadata, self->fd, pg(b, 2), 0, pg(b, 2), pg(b, 4));
	ASSERT_EQ(madvise(b + 4 * PAGE, 2 * PAGE, MADV_DONTNEED), 0);
	expect_advice(_metadata, self->fd, pg(b, 4), RO, pg(b, 4), pg(b, 8));

	r.addr = pg(b, 2);
	EXPECT_EQ(ioctl(self->fd, HMM_DUMMY_FAULT, &r), 0);
	r.addr = pg(b, 4);
	EXPECT_EQ(ioctl(self->fd, HMM_DUMMY_FAULT, &r), -1);
	EXPECT_EQ(errno, EPERM);
}

/*
 * READ_ONLY: a page shared with a fork child (COW) stays shared whatever
 * the device does there, the same PFN in both processes: its write fault
 * and write fail with EPERM, its read reads. The next page, without
 * advice, is the control: the device's write fault breaks COW, as the
 * CPU's would.
 */
TEST_F(devmem, read_only_keeps_cow)
{
	struct hmm_dummy_range r = { .npages = 1, .write = 1 };
	char *b = map_aligned(4 * PAGE, 0), page[PAGE];
	__u64 pfn0, pfn1;
	int go[2], status;
	pid_t pid;

	if (geteuid())
		SKIP(return, "pagemap shows PFNs to root only");
	ASSERT_NE(b, NULL);
	set_buf(self, b, 4 * PAGE);
	fill_pages(b, 0, 4, 1);
	pfn0 = pfn_of(0, b);
	pfn1 = pfn_of(0, b + PAGE);
	ASSERT_NE(pfn0, 0);
	ASSERT_NE(pfn1, 0);
	ASSERT_EQ(advise(self->fd, pg(b, 0), 1, RO), 0);
	ASSERT_EQ(pipe(go), 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		char c;

		/* Holds the pages, touching nothing, until the parent is done. */
		close(go[1]);
		while (read(go[0], &c, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	self->child = pid;
	close(go[0]);
	ASSERT_EQ(pfn_of(pid, b), pfn0);
	ASSERT_EQ(pfn_of(pid, b + PAGE), pfn1);

	r.addr = pg(b, 0);
	EXPECT_EQ(ioctl(self->fd, HMM_DUMMY_FAULT, &r), -1);
	EXPECT_EQ(errno, EPERM);
	EXPECT_EQ(pfn_of(0, b), pfn0);
	fill_page(page, 2, 0);
	EXPECT_EQ(dmirror(self->fd, HMM_DMIRROR_WRITE, b, page, 1, NULL), -EPERM);
	EXPECT_EQ(pfn_of(0, b), pfn0);
	memset(page, 0, PAGE);
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_READ, b, page, 1, NULL), 0);
	EXPECT_EQ(pages_differ(page, 0, 1, 1, NULL), -1);
	EXPECT_EQ(pfn_of(0, b), pfn0);
	EXPECT_EQ(pfn_of(pid, b), pfn0);
	EXPECT_EQ(pages_differ(b, 0, 1, 1, NULL), -1);

	/* Control: without advice, the write fault copies the page. */
	r.addr = pg(b, 1);
	ASSERT_EQ(ioctl(self->fd, HMM_DUMMY_FAULT, &r), 0);
	EXPECT_NE(pfn_of(0, b + PAGE), 0);
	EXPECT_NE(pfn_of(0, b + PAGE), pfn1);
	EXPECT_EQ(pfn_of(pid, b + PAGE), pfn1);
	EXPECT_EQ(pages_differ(b + PAGE, 1, 1, 1, NULL), -1);

	close(go[1]);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	self->child = 0;
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
		TH_LOG("child status %#x", status);
}

/*
 * PREFER_DEVICE: a device fault there migrates the range first, by READ,
 * WRITE or HMM_DUMMY_FAULT, and the data is the same (the CPU reads what
 * the device wrote). The same read of a block without advice leaves it in
 * system memory.
 */
TEST_F_TIMEOUT(devmem, preferred_device_fault_migrates, 120)
{
	struct hmm_dummy_range r = { .npages = HUGE_PAGES };
	char *b = map_aligned(4 * HUGE, 0), *data = malloc(HUGE);
	char *b0 = b, *b1 = b + HUGE, *b2 = b + 2 * HUGE, *b3 = b + 3 * HUGE;

	ASSERT_NE(b, NULL);
	ASSERT_NE(data, NULL);
	set_buf(self, b, 4 * HUGE);
	fill_pages(b, 0, 4 * HUGE_PAGES, 1);
	ASSERT_EQ(advise(self->fd, (uintptr_t)b0, 2 * HUGE_PAGES, DEV), 0);
	ASSERT_EQ(advise(self->fd, (uintptr_t)b3, HUGE_PAGES, DEV), 0);

	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_READ, b0, data, HUGE_PAGES, NULL), 0);
	EXPECT_EQ(pages_differ(data, 0, HUGE_PAGES, 1, NULL), -1);
	EXPECT_EQ(device_pages(self->fd, b0, HUGE_PAGES), HUGE_PAGES);

	fill_pages(data, HUGE_PAGES, HUGE_PAGES, 2);
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_WRITE, b1, data, HUGE_PAGES, NULL), 0);
	EXPECT_EQ(device_pages(self->fd, b1, HUGE_PAGES), HUGE_PAGES);

	r.addr = (uintptr_t)b3;
	ASSERT_EQ(ioctl(self->fd, HMM_DUMMY_FAULT, &r), 0);
	EXPECT_EQ(device_pages(self->fd, b3, HUGE_PAGES), HUGE_PAGES);

	/* Control. */
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_READ, b2, data, HUGE_PAGES, NULL), 0);
	EXPECT_EQ(pages_differ(data, 2 * HUGE_PAGES, HUGE_PAGES, 1, NULL), -1);
	EXPECT_EQ(device_pages(self->fd, b2, HUGE_PAGES), 0);

	/* The CPU's reads (pulling the device's pages back). */
	EXPECT_EQ(pages_differ(b0, 0, HUGE_PAGES, 1, NULL), -1);
	EXPECT_EQ(pages_differ(b1, HUGE_PAGES, HUGE_PAGES, 2, NULL), -1);
	EXPECT_EQ(pages_differ(b2, 2 * HUGE_PAGES, 2 * HUGE_PAGES, 1, NULL), -1);
	free(data);
}

/*
 * PREFETCH moves the advised part of its range to its preferred location
 * and says how much moved: to the device, then (advice changed) back;
 * what is where it should be already, and what has no preferred location,
 * does not move.
 */
TEST_F_TIMEOUT(devmem, prefetch_moves_advised_only, 120)
{
	char *b = map_aligned(2 * HUGE, 0), *b1 = b + HUGE;
	__u64 moved;

	ASSERT_NE(b, NULL);
	set_buf(self, b, 2 * HUGE);
	fill_pages(b, 0, 2 * HUGE_PAGES, 1);
	ASSERT_EQ(advise(self->fd, pg(b, 0), HUGE_PAGES, DEV), 0);
	ASSERT_EQ(advise(self->fd, pg(b1, 0), 8, RO), 0);

	ASSERT_EQ(prefetch(self->fd, b, 2 * HUGE_PAGES, &moved), 0);
	EXPECT_EQ(moved, HUGE_PAGES);
	EXPECT_EQ(device_pages(self->fd, b, HUGE_PAGES), HUGE_PAGES);
	EXPECT_EQ(device_pages(self->fd, b1, HUGE_PAGES), 0);
	ASSERT_EQ(prefetch(self->fd, b, 2 * HUGE_PAGES, &moved), 0);
	EXPECT_EQ(moved, 0);

	ASSERT_EQ(advise(self->fd, pg(b, 0), HUGE_PAGES, SYS), 0);
	ASSERT_EQ(prefetch(self->fd, b, 2 * HUGE_PAGES, &moved), 0);
	EXPECT_EQ(moved, HUGE_PAGES);
	EXPECT_EQ(device_pages(self->fd, b, HUGE_PAGES), 0);
	EXPECT_EQ(pages_differ(b, 0, 2 * HUGE_PAGES, 1, NULL), -1);
	ASSERT_EQ(prefetch(self->fd, b, HUGE_PAGES, &moved), 0);
	EXPECT_EQ(moved, 0);

	/* No preferred location (no advice, or READ_ONLY only): nothing moves. */
	ASSERT_EQ(prefetch(self->fd, b1, HUGE_PAGES, &moved), 0);
	EXPECT_EQ(moved, 0);
	EXPECT_EQ(device_pages(self->fd, b1, HUGE_PAGES), 0);
}

/*
 * DEVMEM with @evict 0 only reads the counters; with @evict it empties the
 * least recently used blocks first, at least that many pages (whole blocks,
 * maybe more): in_use and evicted move by what it says it evicted, that
 * many of our pages are back in system memory, and they hold their data.
 */
TEST_F_TIMEOUT(devmem, evict_on_request, 120)
{
	const unsigned long n = 8 * HUGE / PAGE;
	struct hmm_dummy_devmem d0, d1, d2, d3;
	char *b = map_aligned(n * PAGE, 0), *data = malloc(n * PAGE);
	unsigned long ours;
	__u64 cpages;

	ASSERT_NE(b, NULL);
	ASSERT_NE(data, NULL);
	set_buf(self, b, n * PAGE);
	fill_pages(b, 0, n, 1);
	ASSERT_EQ(devmem(self->fd, 0, &d0), 0);
	EXPECT_EQ(d0.size, self->mib << 20 >> 12) TH_LOG("devmem_mib=%ld", self->mib);
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, b, data, n, &cpages), 0);
	ASSERT_EQ(cpages, n);
	EXPECT_EQ(pages_differ(data, 0, n, 1, NULL), -1);
	ASSERT_EQ(device_pages(self->fd, b, n), n);

	ASSERT_EQ(devmem(self->fd, 0, &d1), 0);
	EXPECT_EQ(d1.evicted_now, 0);
	EXPECT_EQ(d1.in_use - d0.in_use, n);
	ASSERT_EQ(devmem(self->fd, 0, &d2), 0);
	EXPECT_EQ(d2.evicted_now, 0);
	EXPECT_EQ(d2.in_use, d1.in_use);
	EXPECT_EQ(d2.evicted, d1.evicted);
	ASSERT_EQ(device_pages(self->fd, b, n), n);

	ASSERT_EQ(devmem(self->fd, 1024, &d3), 0);
	TH_LOG("evicted %llu of %llu pages in use (%llu of them ours)",
	       (unsigned long long)d3.evicted_now, (unsigned long long)d2.in_use,
	       (unsigned long long)n);
	EXPECT_GE(d3.evicted_now, 1024);
	EXPECT_EQ(d2.in_use - d3.in_use, d3.evicted_now);
	EXPECT_EQ(d3.evicted - d2.evicted, d3.evicted_now);
	EXPECT_EQ(d3.size, d0.size);
	/* Ours back in system memory: all it evicted, if nobody else had pages there. */
	ours = n - device_pages(self->fd, b, n);
	EXPECT_TRUE(d0.in_use ? ours <= d3.evicted_now : ours == d3.evicted_now)
		TH_LOG("%lu of our pages evicted, %llu pages in use before ours", ours,
		       (unsigned long long)d0.in_use);
	EXPECT_EQ(pages_differ(b, 0, n, 1, NULL), -1);
	free(data);
}

/* The alternations of each phase of ping_pong. */
#define ALTERNATIONS	16

/*
 * ALTERNATIONS times: MIGRATE_TO_DEV of the 2 MiB block @b (which must
 * return what the CPU wrote, @want, whether the block moved or the device
 * read it where it was), then the CPU writes a new word into each page,
 * which pulls every page back. Counts the alternations that moved the
 * block (all its pages on the device after the migration) and those that
 * did not (none): a block moves whole or not at all.
 */
static void ping_pong(struct __test_metadata *_metadata, int fd, char *b, char *want,
		      unsigned int seed, unsigned int *moved, unsigned int *held)
{
	char *got = malloc(HUGE);
	unsigned long k;
	unsigned int i;
	__u64 cpages;
	long dev;

	ASSERT_NE(got, NULL);
	*moved = *held = 0;
	for (i = 0; i < ALTERNATIONS; i++) {
		ASSERT_EQ(dmirror(fd, HMM_DMIRROR_MIGRATE_TO_DEV, b, got, HUGE_PAGES, &cpages), 0)
			TH_LOG("alternation %u", i);
		ASSERT_EQ(cpages, HUGE_PAGES) TH_LOG("alternation %u", i);
		ASSERT_EQ(memcmp(got, want, HUGE), 0)
			TH_LOG("alternation %u: the device did not read what the CPU wrote", i);
		dev = device_pages(fd, b, HUGE_PAGES);
		EXPECT_TRUE(dev == 0 || dev == HUGE_PAGES)
			TH_LOG("alternation %u: %ld of the block's pages moved", i, dev);
		*moved += dev == HUGE_PAGES;
		*held += dev == 0;
		for (k = 0; k < HUGE_PAGES; k++) {
			unsigned long long w = word(seed + i, k);

			((unsigned long long *)(b + k * PAGE))[i] = w;
			((unsigned long long *)(want + k * PAGE))[i] = w;
		}
		ASSERT_EQ(device_pages(fd, b, HUGE_PAGES), 0)
			TH_LOG("alternation %u: the CPU's writes left pages on the device", i);
	}
	free(got);
}

/*
 * Thrash control: without it, every alternation moves the block; with a
 * window and a backoff much longer than an alternation (even under TCG),
 * the block is held in system memory for most of them, each hold counted
 * as its 512 pages, at least one repeat seen. Turned off again, the block
 * moves at once.
 */
TEST_F_TIMEOUT(devmem, thrash_control_holds_ping_pong, 300)
{
	struct hmm_dummy_devmem d0, d1, d2;
	char *b = map_aligned(HUGE, 0), *want = malloc(HUGE), *got = malloc(HUGE);
	unsigned int moved, held;

	ASSERT_NE(b, NULL);
	ASSERT_NE(want, NULL);
	ASSERT_NE(got, NULL);
	set_buf(self, b, HUGE);
	fill_pages(b, 0, HUGE_PAGES, 1);
	memcpy(want, b, HUGE);

	ASSERT_EQ(devmem(self->fd, 0, &d0), 0);
	ping_pong(_metadata, self->fd, b, want, 100, &moved, &held);
	ASSERT_EQ(devmem(self->fd, 0, &d1), 0);
	TH_LOG("thrash control off: %u of %u alternations moved the block", moved, ALTERNATIONS);
	EXPECT_EQ(moved, ALTERNATIONS);
	EXPECT_EQ(d1.thrash_held, d0.thrash_held);
	EXPECT_EQ(d1.thrash_detected, d0.thrash_detected);

	ASSERT_EQ(set_thrash(self->fd, 10000000, 1000000), 0);
	ping_pong(_metadata, self->fd, b, want, 200, &moved, &held);
	ASSERT_EQ(devmem(self->fd, 0, &d2), 0);
	TH_LOG("thrash control on: %u moved, %u held; %llu repeats seen", moved, held,
	       (unsigned long long)(d2.thrash_detected - d1.thrash_detected));
	EXPECT_LT(moved, ALTERNATIONS / 2);
	EXPECT_EQ(moved + held, ALTERNATIONS);
	EXPECT_GE(d2.thrash_detected - d1.thrash_detected, 1);
	EXPECT_EQ(d2.thrash_held - d1.thrash_held, (__u64)held * HUGE_PAGES);

	/* Off: holds end with it. */
	ASSERT_EQ(set_thrash(self->fd, 0, 0), 0);
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, b, got, HUGE_PAGES, NULL), 0);
	EXPECT_EQ(memcmp(got, want, HUGE), 0);
	EXPECT_EQ(device_pages(self->fd, b, HUGE_PAGES), HUGE_PAGES);
	free(want);
	free(got);
}

/*
 * Migrates @bytes at @b to the device 2 MiB at a time (pass @pass): each
 * step returns every page's bytes (page k holds seed gen[k]) and leaves
 * every page of its block on the device: a full device made room.
 */
static void sweep(struct __test_metadata *_metadata, int fd, char *b, unsigned long bytes,
		  const unsigned int *gen, unsigned int pass)
{
	char *got = malloc(HUGE);
	unsigned long off;
	__u64 cpages;
	long bad;

	ASSERT_NE(got, NULL);
	for (off = 0; off < bytes; off += HUGE) {
		ASSERT_EQ(dmirror(fd, HMM_DMIRROR_MIGRATE_TO_DEV, b + off, got, HUGE_PAGES,
				  &cpages), 0) TH_LOG("pass %u, block %lu", pass, off / HUGE);
		ASSERT_EQ(cpages, HUGE_PAGES) TH_LOG("pass %u, block %lu", pass, off / HUGE);
		ASSERT_EQ(device_pages(fd, b + off, HUGE_PAGES), HUGE_PAGES)
			TH_LOG("pass %u, block %lu: not every page placed", pass, off / HUGE);
		bad = pages_differ(got, off / PAGE, HUGE_PAGES, 0, gen);
		ASSERT_EQ(bad, -1) TH_LOG("pass %u, block %lu: page %ld read wrong", pass,
					  off / HUGE, bad);
	}
	free(got);
}

#define PASSES		3
#define REWRITE_EVERY	97	/* the pages the CPU rewrites between passes */

/*
 * A working set of @factor times the device's memory, THP-backed if
 * @huge, swept to the device PASSES times, the CPU rewriting some pages
 * between passes: every step places every page, nothing is left out for
 * lack of room (not_placed), the first pass alone must have evicted all
 * that did not fit, and the CPU reads every page's last bytes at the end.
 */
static void oversubscribe(struct __test_metadata *_metadata, struct _test_data_devmem *self,
			  unsigned int factor, int huge)
{
	unsigned long bytes = factor * (self->mib << 20), n = bytes / PAGE, k;
	unsigned int *gen = malloc(n * sizeof(*gen)), pass;
	struct hmm_dummy_devmem d0, d;
	char *b = map_aligned(bytes, huge);
	long bad;

	ASSERT_NE(b, NULL);
	ASSERT_NE(gen, NULL);
	set_buf(self, b, bytes);
	for (k = 0; k < n; k++)
		gen[k] = 1;
	fill_pages(b, 0, n, 1);
	ASSERT_EQ(devmem(self->fd, 0, &d0), 0);
	for (pass = 1; pass <= PASSES; pass++) {
		sweep(_metadata, self->fd, b, bytes, gen, pass);
		ASSERT_EQ(devmem(self->fd, 0, &d), 0);
		TH_LOG("pass %u: %llu pages in use of %llu, %llu evicted, %llu blocks skipped",
		       pass, (unsigned long long)d.in_use, (unsigned long long)d.size,
		       (unsigned long long)(d.evicted - d0.evicted),
		       (unsigned long long)(d.evict_skipped - d0.evict_skipped));
		EXPECT_EQ(d.not_placed, d0.not_placed);
		EXPECT_LE(d.in_use, d.size);
		if (pass == 1)
			EXPECT_GE(d.evicted - d0.evicted, n - d.size);
		for (k = pass; k < n; k += REWRITE_EVERY) {
			gen[k] = pass + 1;
			fill_page(b + k * PAGE, gen[k], k);
		}
	}
	bad = pages_differ(b, 0, n, 0, gen);
	EXPECT_EQ(bad, -1) TH_LOG("page %ld read wrong by the CPU", bad);
	ASSERT_EQ(devmem(self->fd, 0, &d), 0);
	EXPECT_GT(d.evicted, d0.evicted);
	EXPECT_EQ(d.not_placed, d0.not_placed);
	EXPECT_LE(d.in_use, d.size);
	free(gen);
}

TEST_F_TIMEOUT(devmem, oversubscribe_4x, 900)
{
	if (self->mib > SMALL_MIB)
		SKIP(return, "devmem_mib=%ld: oversubscription runs with devmem_mib <= %d",
		     self->mib, SMALL_MIB);
	oversubscribe(_metadata, self, 4, 1);
}

TEST_F_TIMEOUT(devmem, oversubscribe_2x, 600)
{
	if (self->mib > SMALL_MIB)
		SKIP(return, "devmem_mib=%ld: oversubscription runs with devmem_mib <= %d",
		     self->mib, SMALL_MIB);
	oversubscribe(_metadata, self, 2, 0);
}

/*
 * The child of killed_while_evicting: its own mirror and a working set of
 * @bytes, swept to the device over and over once @go says so (evicting
 * the parent's blocks and its own), until it is killed. Exits only if a
 * step fails: 2 the migration, 3 its data.
 */
static int evicting_child(int go, unsigned long bytes, pid_t parent)
{
	char *b, *got = malloc(HUGE), c;
	unsigned long off;
	__u64 cpages;
	int fd;

	/* Dies with the test, whatever happens to it. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		return 1;
	fd = open("/dev/hmm_dmirror0", O_RDWR);
	b = map_aligned(bytes, 1);
	if (fd < 0 || !b || !got)
		return 1;
	fill_pages(b, 0, bytes / PAGE, 3);
	if (read(go, &c, 1) != 1)
		return 1;
	for (;;) {
		for (off = 0; off < bytes; off += HUGE) {
			if (dmirror(fd, HMM_DMIRROR_MIGRATE_TO_DEV, b + off, got, HUGE_PAGES,
				    &cpages) || cpages != HUGE_PAGES)
				return 2;
			if (pages_differ(got, off / PAGE, HUGE_PAGES, 3, NULL) != -1)
				return 3;
		}
	}
}

/*
 * A process killed while its migrations evict other processes' blocks
 * (the parent's, which filled the device first) dies (waitpid returns, by
 * SIGKILL), and leaves the device as it should: the parent's data intact,
 * and its buffer placed whole again by a new sweep.
 */
TEST_F_TIMEOUT(devmem, killed_while_evicting, 900)
{
	unsigned long bytes = 2 * (self->mib << 20), n = bytes / PAGE, k;
	struct hmm_dummy_devmem d0, d;
	pid_t pid, r, parent = getpid();
	int go[2], status = 0;
	unsigned int *gen;
	long bad, placed;

	if (self->mib > SMALL_MIB)
		SKIP(return, "devmem_mib=%ld: oversubscription runs with devmem_mib <= %d",
		     self->mib, SMALL_MIB);
	gen = malloc(n * sizeof(*gen));
	ASSERT_NE(gen, NULL);
	for (k = 0; k < n; k++)
		gen[k] = 1;
	/* Forked first, so that the parent's buffer is not in the child's mm. */
	ASSERT_EQ(pipe(go), 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		close(go[1]);
		_exit(evicting_child(go[0], 4 * (self->mib << 20), parent));
	}
	self->child = pid;
	close(go[0]);

	set_buf(self, map_aligned(bytes, 0), bytes);
	ASSERT_NE(self->buf, NULL);
	fill_pages(self->buf, 0, n, 1);
	sweep(_metadata, self->fd, self->buf, bytes, gen, 1);
	placed = device_pages(self->fd, self->buf, n);
	ASSERT_GT(placed, 0);
	ASSERT_EQ(devmem(self->fd, 0, &d0), 0);
	ASSERT_EQ(write(go[1], "g", 1), 1);
	/*
	 * The device is full: the child's first step evicts. Once it does,
	 * let it go on a while, so that the kill finds it in the middle.
	 */
	do {
		r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			self->child = 0;
		ASSERT_EQ(r, 0) TH_LOG("the child ended before it was killed: status %#x", status);
		ASSERT_EQ(devmem(self->fd, 0, &d), 0);
		usleep(10000);
	} while (d.evicted - d0.evicted < HUGE_PAGES);
	usleep(300000);
	ASSERT_EQ(kill(pid, SIGKILL), 0);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	self->child = 0;
	ASSERT_TRUE(WIFSIGNALED(status))
		TH_LOG("the child exited (status %#x: 2 a migration failed, 3 wrong data)", status);
	EXPECT_EQ(WTERMSIG(status), SIGKILL);
	close(go[1]);
	/* The child's sweeps took the parent's blocks, least recently used, first. */
	EXPECT_LT(device_pages(self->fd, self->buf, n), placed);

	bad = pages_differ(self->buf, 0, n, 0, gen);
	EXPECT_EQ(bad, -1) TH_LOG("page %ld read wrong by the CPU", bad);
	ASSERT_EQ(devmem(self->fd, 0, &d0), 0);
	sweep(_metadata, self->fd, self->buf, bytes, gen, 2);
	ASSERT_EQ(devmem(self->fd, 0, &d), 0);
	EXPECT_EQ(d.not_placed, d0.not_placed);
	EXPECT_LE(d.in_use, d.size);
	free(gen);
}

TEST_HARNESS_MAIN
