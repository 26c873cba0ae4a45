// SPDX-License-Identifier: GPL-2.0
/*
 * DMA-mapped mirrors against a real IOMMU (make test's dma VM: QEMU q35,
 * intel-iommu, hmm_dummy edu=1 on two QEMU edu devices). The device reads
 * and writes with its DMA engine at the addresses the core mapped; after
 * munmap, mprotect, fork or a migration, the address it had is unmapped:
 * the device's engine, pointed at it on purpose (HMM_DUMMY_DMA_PROBE),
 * makes the IOMMU log a fault for exactly that address (read back from the
 * kernel log), so a mapping the core forgot would show as a probe that
 * faults nowhere. A 2 MiB THP is one mapping; an injected mapping failure
 * fails the access cleanly with nothing left mapped; unbinding the PCI
 * devices under live mirrors unmaps them (DMA-API debugging would report a
 * mapping left behind) and their accesses fail with ENODEV.
 *
 * The 4 KiB pages of a 2 MiB block are linked into one IOVA range
 * (hmm_rs dma_iova=Y, the default): make test runs this suite again with
 * dma_iova=N (dma_iommu@per-page), where each page is mapped alone; the
 * iova_window tests check which path ran, by its addresses and counters.
 *
 * Elsewhere (no edu device), every test skips.
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include <lib/test_hmm_uapi.h>
#include "hmm_dummy_uapi.h"

#define PAGE		4096UL
#define HUGE		(2UL << 20)
#define NPAGES		16UL
#define FAIL_DMA	"/sys/kernel/debug/hmm_rs_fail_dma"
#define EDU_DRIVER	"/sys/bus/pci/drivers/hmm_dummy_edu"
#define DMA_IOVA	"/sys/module/hmm_rs/parameters/dma_iova"
#define STATS		"/sys/kernel/debug/hmm_rs/stats"

static int dmirror(int fd, unsigned long req, void *addr, void *ptr, unsigned long npages)
{
	struct hmm_dmirror_cmd cmd = {
		.addr = (uintptr_t)addr, .ptr = (uintptr_t)ptr, .npages = npages,
	};

	return ioctl(fd, req, &cmd) ? -errno : 0;
}

/* One value per page: DMA address | order, or HMM_DUMMY_DMA_NONE. */
static int dma_info(int fd, void *addr, unsigned long npages, __u64 *out)
{
	struct hmm_dummy_range r = {
		.addr = (uintptr_t)addr, .npages = npages, .ptr = (uintptr_t)out,
	};

	return ioctl(fd, HMM_DUMMY_DMA_INFO, &r) ? -errno : 0;
}

static int mapped(const __u64 *v, unsigned long n)
{
	unsigned long i, k = 0;

	for (i = 0; i < n; i++)
		k += v[i] != HMM_DUMMY_DMA_NONE;
	return k;
}

static void log_mark(const char *s)
{
	int fd = open("/dev/kmsg", O_WRONLY);

	if (fd >= 0) {
		if (write(fd, s, strlen(s)) < 0)
			perror("/dev/kmsg");
		close(fd);
	}
}

/*
 * The kernel prints at most 10 lines of IOMMU faults per 5 s (dmar_fault()'s
 * ratelimit), and each fault takes 3 of them (the status register, the
 * record, the check for another): a probe waits until fewer than 3 of the
 * last probes' faults lie within the last 5 s, else its fault's record
 * could be left unprinted, and its fault unseen.
 */
#define RATELIMIT_FAULTS	3
static struct {
	double at[RATELIMIT_FAULTS];
	unsigned int n;
} *faults;

/* Shared by the harness's test processes, which fork from this one. */
static void __attribute__((constructor)) faults_init(void)
{
	faults = mmap(NULL, sizeof(*faults), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (faults == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void ratelimit_wait(void)
{
	double oldest = faults->at[faults->n % RATELIMIT_FAULTS], left;

	if (faults->n < RATELIMIT_FAULTS)
		return;
	left = oldest + 5.5 - now_s();
	if (left > 0)
		usleep(left * 1e6);
}

/*
 * Points the device's DMA engine at @dma (reading, or writing zeros) and
 * returns whether the IOMMU logged a fault at that address within a second.
 */
static int probe_faults(int fd, __u64 dma, int write)
{
	struct hmm_dummy_dma_probe p = { .dma = dma & ~(PAGE - 1), .write = write };
	char want[64], rec[1024];
	int log, found = 0, tries;
	ssize_t n;

	ratelimit_wait();

	snprintf(want, sizeof(want), "fault addr 0x%llx", (unsigned long long)p.dma);
	log = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (log < 0)
		return -errno;
	lseek(log, 0, SEEK_END);
	log_mark("HMMRS-IOMMU-PROBE-BEGIN\n");
	if (ioctl(fd, HMM_DUMMY_DMA_PROBE, &p)) {
		close(log);
		return -errno;
	}
	for (tries = 0; tries < 100 && !found; tries++) {
		while (!found && (n = read(log, rec, sizeof(rec) - 1)) > 0) {
			rec[n] = 0;
			found = strstr(rec, "DMAR: [DMA ") && strstr(rec, want);
		}
		if (!found)
			usleep(10000);
	}
	log_mark("HMMRS-IOMMU-PROBE-END\n");
	close(log);
	if (found)
		faults->at[faults->n++ % RATELIMIT_FAULTS] = now_s();
	return found;
}

/* The counter @key of hmm_rs/stats' "dma" line, or -1. */
static long long dma_stat(const char *key)
{
	char line[512], *p;
	long long v = -1;
	FILE *f = fopen(STATS, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "dma ", 4))
			continue;
		p = strstr(line, key);
		if (p && p[strlen(key)] == ' ')
			v = atoll(p + strlen(key) + 1);
	}
	fclose(f);
	return v;
}

/* Whether the core links pages into IOVA ranges now (dma_iova=Y). */
static int iova_on(void)
{
	char c = 0;
	FILE *f = fopen(DMA_IOVA, "r");

	if (f) {
		if (fscanf(f, "%c", &c) != 1)
			c = 0;
		fclose(f);
	}
	return c == 'Y';
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, s, strlen(s));
	close(fd);
	return n == (ssize_t)strlen(s) ? 0 : -errno;
}

FIXTURE(dma)
{
	int fd;
	char *buf;
	char *data;
	__u64 info[NPAGES];
};

FIXTURE_SETUP(dma)
{
	self->fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_GE(self->fd, 0);
	self->buf = mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(self->buf, MAP_FAILED);
	self->data = malloc(NPAGES * PAGE);
	ASSERT_NE(self->data, NULL);
	if (dma_info(self->fd, self->buf, 1, self->info) == -ENODEV)
		SKIP(return, "hmm_dummy is not on an edu device (edu=1)");
	for (unsigned long i = 0; i < NPAGES * PAGE; i++)
		self->buf[i] = (char)(i / PAGE + 1);
	/* The device reads through its mappings: the data arrives. */
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_READ, self->buf, self->data, NPAGES), 0);
	ASSERT_EQ(memcmp(self->data, self->buf, NPAGES * PAGE), 0);
	ASSERT_EQ(dma_info(self->fd, self->buf, NPAGES, self->info), 0);
	ASSERT_EQ(mapped(self->info, NPAGES), NPAGES);
}

FIXTURE_TEARDOWN(dma)
{
	munmap(self->buf, NPAGES * PAGE);
	free(self->data);
	close(self->fd);
}

/* The oracle itself: a live address does not fault, a stale one does. */
TEST_F(dma, probe_of_a_mapped_address_does_not_fault)
{
	ASSERT_EQ(probe_faults(self->fd, self->info[0], 0), 0);
}

TEST_F(dma, munmap_unmaps)
{
	__u64 now[NPAGES];

	ASSERT_EQ(munmap(self->buf, NPAGES * PAGE), 0);
	ASSERT_EQ(dma_info(self->fd, self->buf, NPAGES, now), 0);
	ASSERT_EQ(mapped(now, NPAGES), 0);
	ASSERT_EQ(probe_faults(self->fd, self->info[0], 0), 1);
	ASSERT_EQ(probe_faults(self->fd, self->info[NPAGES - 1], 0), 1);
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_READ, self->buf, self->data, NPAGES), -EFAULT);
	self->buf = mmap(self->buf, NPAGES * PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

TEST_F(dma, mprotect_unmaps_the_writable_mapping)
{
	__u64 now[NPAGES];
	unsigned long i;

	/* A device write maps bidirectionally (a new mapping). */
	memset(self->data, 0x5a, NPAGES * PAGE);
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_WRITE, self->buf, self->data, NPAGES), 0);
	ASSERT_EQ(dma_info(self->fd, self->buf, NPAGES, self->info), 0);
	ASSERT_EQ(mapped(self->info, NPAGES), NPAGES);
	for (i = 0; i < NPAGES * PAGE; i++)
		ASSERT_EQ(self->buf[i], 0x5a);
	ASSERT_EQ(mprotect(self->buf, NPAGES * PAGE, PROT_READ), 0);
	ASSERT_EQ(dma_info(self->fd, self->buf, NPAGES, now), 0);
	ASSERT_EQ(mapped(now, NPAGES), 0);
	ASSERT_EQ(probe_faults(self->fd, self->info[0], 1), 1);
	/* Reading maps again, to the device; writing is refused. */
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_READ, self->buf, self->data, NPAGES), 0);
	ASSERT_EQ(memcmp(self->data, self->buf, NPAGES * PAGE), 0);
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_WRITE, self->buf, self->data, NPAGES), -EPERM);
}

TEST_F(dma, fork_unmaps_the_writable_mapping)
{
	__u64 now[NPAGES];
	pid_t pid;
	int status;

	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_WRITE, self->buf, self->data, NPAGES), 0);
	ASSERT_EQ(dma_info(self->fd, self->buf, NPAGES, self->info), 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		self->buf[0] = 42;	/* the child's copy */
		_exit(0);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_EQ(dma_info(self->fd, self->buf, NPAGES, now), 0);
	ASSERT_EQ(mapped(now, NPAGES), 0);
	ASSERT_EQ(probe_faults(self->fd, self->info[0], 1), 1);
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_READ, self->buf, self->data, NPAGES), 0);
	ASSERT_EQ(memcmp(self->data, self->buf, NPAGES * PAGE), 0);
	ASSERT_NE(self->buf[0], 42);
}

TEST_F(dma, migration_unmaps)
{
	__u64 now[NPAGES];

	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, self->buf, self->data, NPAGES), 0);
	ASSERT_EQ(dma_info(self->fd, self->buf, NPAGES, now), 0);
	ASSERT_EQ(mapped(now, NPAGES), 0);
	ASSERT_EQ(probe_faults(self->fd, self->info[0], 0), 1);
	/* Device pages are the device's own: read without DMA mappings. */
	memset(self->data, 0, NPAGES * PAGE);
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_READ, self->buf, self->data, NPAGES), 0);
	ASSERT_EQ(self->data[0], 1);
	ASSERT_EQ(self->data[NPAGES * PAGE - 1], (char)NPAGES);
	ASSERT_EQ(dma_info(self->fd, self->buf, NPAGES, now), 0);
	ASSERT_EQ(mapped(now, NPAGES), 0);
}

TEST_F(dma, injected_mapping_failure_is_a_clean_error)
{
	__u64 now[NPAGES];

	if (access(FAIL_DMA, F_OK))
		SKIP(return, "no %s (CONFIG_FAULT_INJECTION_DEBUG_FS)", FAIL_DMA);
	ASSERT_EQ(munmap(self->buf, NPAGES * PAGE), 0);
	self->buf = mmap(self->buf, NPAGES * PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	ASSERT_NE(self->buf, MAP_FAILED);
	memset(self->buf, 7, NPAGES * PAGE);
	/* The tenth mapping of the next fault fails, once. */
	ASSERT_EQ(write_file(FAIL_DMA "/verbose", "0"), 0);
	ASSERT_EQ(write_file(FAIL_DMA "/space", "36864"), 0);
	ASSERT_EQ(write_file(FAIL_DMA "/times", "1"), 0);
	ASSERT_EQ(write_file(FAIL_DMA "/probability", "100"), 0);
	EXPECT_EQ(dmirror(self->fd, HMM_DMIRROR_READ, self->buf, self->data, NPAGES), -ENOMEM);
	ASSERT_EQ(write_file(FAIL_DMA "/probability", "0"), 0);
	ASSERT_EQ(dma_info(self->fd, self->buf, NPAGES, now), 0);
	EXPECT_EQ(mapped(now, NPAGES), 0);
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_READ, self->buf, self->data, NPAGES), 0);
	ASSERT_EQ(memcmp(self->data, self->buf, NPAGES * PAGE), 0);
}

/*
 * A 2 MiB block of 4 KiB pages (no THP), faulted for the device at once,
 * and its mappings' counters before and after.
 */
FIXTURE(iova_window)
{
	int fd;
	char *raw, *buf, *data;
	__u64 info[HUGE / PAGE];
	long long links, unlinks, ranges, maps;
};

FIXTURE_SETUP(iova_window)
{
	unsigned long n = HUGE / PAGE;

	self->fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_GE(self->fd, 0);
	self->raw = mmap(NULL, 2 * HUGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(self->raw, MAP_FAILED);
	self->data = malloc(HUGE);
	ASSERT_NE(self->data, NULL);
	if (dma_info(self->fd, self->raw, 1, self->info) == -ENODEV)
		SKIP(return, "hmm_dummy is not on an edu device (edu=1)");
	ASSERT_GE(dma_stat("iova_links"), 0);
	self->buf = (char *)(((uintptr_t)self->raw + HUGE - 1) & ~(HUGE - 1));
	ASSERT_EQ(madvise(self->buf, HUGE, MADV_NOHUGEPAGE), 0);
	for (unsigned long i = 0; i < HUGE; i += PAGE)
		self->buf[i] = (char)(i / PAGE);
	self->links = dma_stat("iova_links");
	self->unlinks = dma_stat("iova_unlinks");
	self->ranges = dma_stat("iova_ranges");
	self->maps = dma_stat("maps");
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_READ, self->buf, self->data, n), 0);
	ASSERT_EQ(memcmp(self->data, self->buf, HUGE), 0);
	ASSERT_EQ(dma_info(self->fd, self->buf, n, self->info), 0);
	ASSERT_EQ(mapped(self->info, n), n);
}

FIXTURE_TEARDOWN(iova_window)
{
	munmap(self->raw, 2 * HUGE);
	free(self->data);
	close(self->fd);
}

/*
 * Linked: page i at the block's first address + i pages, 512 links, one
 * range more; unmapping the block is one unlink (one IOTLB flush), frees
 * the range, and every page's address faults. Per page: 512 mappings of
 * their own, nothing linked.
 */
TEST_F(iova_window, block_is_one_range_and_munmap_one_flush)
{
	unsigned long n = HUGE / PAGE, i;

	for (i = 0; i < n; i++)
		ASSERT_EQ(self->info[i] & 0xfff, 0);
	if (!iova_on()) {
		EXPECT_EQ(dma_stat("iova_links"), self->links);
		EXPECT_EQ(dma_stat("maps"), self->maps + n);
		return;
	}
	for (i = 0; i < n; i++)
		ASSERT_EQ(self->info[i], self->info[0] + i * PAGE);
	EXPECT_EQ(dma_stat("iova_links"), self->links + n);
	EXPECT_EQ(dma_stat("iova_ranges"), self->ranges + 1);
	EXPECT_EQ(dma_stat("maps"), self->maps);
	ASSERT_EQ(munmap(self->buf, HUGE), 0);
	EXPECT_EQ(dma_stat("iova_unlinks"), self->unlinks + 1);
	EXPECT_EQ(dma_stat("iova_ranges"), self->ranges);
	ASSERT_EQ(probe_faults(self->fd, self->info[0], 0), 1);
	ASSERT_EQ(probe_faults(self->fd, self->info[n / 2], 0), 1);
	ASSERT_EQ(probe_faults(self->fd, self->info[n - 1], 0), 1);
}

/*
 * One page of the block dropped (MADV_DONTNEED: munmap would split the VMA,
 * and a split invalidates the whole 2 MiB around it, __split_huge_pmd()):
 * its address faults, its neighbours' do not, the device still reads the
 * rest through the range, which goes with the block.
 */
TEST_F(iova_window, one_page_unlinked_alone)
{
	unsigned long n = HUGE / PAGE, k = 100;
	__u64 now[3];

	ASSERT_EQ(madvise(self->buf + k * PAGE, PAGE, MADV_DONTNEED), 0);
	ASSERT_EQ(dma_info(self->fd, self->buf + (k - 1) * PAGE, 3, now), 0);
	ASSERT_EQ(now[0], self->info[k - 1]);
	ASSERT_EQ(now[1], HMM_DUMMY_DMA_NONE);
	ASSERT_EQ(now[2], self->info[k + 1]);
	ASSERT_EQ(probe_faults(self->fd, self->info[k], 0), 1);
	ASSERT_EQ(probe_faults(self->fd, self->info[k - 1], 0), 0);
	ASSERT_EQ(probe_faults(self->fd, self->info[k + 1], 0), 0);
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_READ, self->buf + (k + 1) * PAGE, self->data,
			  n - k - 1), 0);
	ASSERT_EQ(memcmp(self->data, self->buf + (k + 1) * PAGE, (n - k - 1) * PAGE), 0);
	if (iova_on())
		EXPECT_EQ(dma_stat("iova_ranges"), self->ranges + 1);
	ASSERT_EQ(munmap(self->buf, HUGE), 0);
	EXPECT_EQ(dma_stat("iova_ranges"), self->ranges);
	ASSERT_EQ(probe_faults(self->fd, self->info[k + 1], 0), 1);
}

/*
 * Write protection takes the writable pages out (their addresses fault
 * for a write), and the device's next read links them again, to-device.
 */
TEST_F(iova_window, mprotect_relinks_read_only)
{
	unsigned long n = HUGE / PAGE;
	__u64 now[HUGE / PAGE];

	memset(self->data, 0x33, HUGE);
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_WRITE, self->buf, self->data, n), 0);
	ASSERT_EQ(dma_info(self->fd, self->buf, n, self->info), 0);
	ASSERT_EQ(mapped(self->info, n), n);
	ASSERT_EQ(mprotect(self->buf, HUGE, PROT_READ), 0);
	ASSERT_EQ(dma_info(self->fd, self->buf, n, now), 0);
	ASSERT_EQ(mapped(now, n), 0);
	ASSERT_EQ(probe_faults(self->fd, self->info[7], 1), 1);
	ASSERT_EQ(dmirror(self->fd, HMM_DMIRROR_READ, self->buf, self->data, n), 0);
	ASSERT_EQ(memcmp(self->data, self->buf, HUGE), 0);
	ASSERT_EQ(dma_info(self->fd, self->buf, n, now), 0);
	ASSERT_EQ(mapped(now, n), n);
	/* Read-only now: the engine's write to a page faults. */
	ASSERT_EQ(probe_faults(self->fd, now[7], 1), 1);
	ASSERT_EQ(probe_faults(self->fd, now[7], 0), 0);
}

TEST(huge_page_is_one_mapping)
{
	__u64 *info = calloc(512, sizeof(*info));
	unsigned long i;
	char *raw, *buf, *data = malloc(HUGE);
	int fd = open("/dev/hmm_dmirror0", O_RDWR);

	ASSERT_GE(fd, 0);
	ASSERT_NE(info, NULL);
	ASSERT_NE(data, NULL);
	raw = mmap(NULL, 2 * HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(raw, MAP_FAILED);
	if (dma_info(fd, raw, 1, info) == -ENODEV)
		SKIP(return, "hmm_dummy is not on an edu device (edu=1)");
	buf = (char *)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
	ASSERT_EQ(madvise(buf, HUGE, MADV_HUGEPAGE), 0);
	memset(buf, 3, HUGE);
	ASSERT_EQ(dmirror(fd, HMM_DMIRROR_READ, buf, data, HUGE / PAGE), 0);
	ASSERT_EQ(memcmp(data, buf, HUGE), 0);
	ASSERT_EQ(dma_info(fd, buf, HUGE / PAGE, info), 0);
	if ((info[0] & 0xfff) != 9)
		SKIP(return, "no THP here (order %llu)", (unsigned long long)(info[0] & 0xfff));
	/* One mapping: page i at the first page's address + i pages. */
	for (i = 0; i < HUGE / PAGE; i++)
		ASSERT_EQ(info[i], info[0] + i * PAGE);
	/* Part of it unmapped: the mapping goes whole. */
	ASSERT_EQ(munmap(buf + HUGE - PAGE, PAGE), 0);
	ASSERT_EQ(dma_info(fd, buf, HUGE / PAGE - 1, info), 0);
	ASSERT_EQ(mapped(info, HUGE / PAGE - 1), 0);
	munmap(raw, 2 * HUGE);
	close(fd);
	free(info);
	free(data);
}

/*
 * hmm-tests' anon_write_child on device-coherent memory, step by step: the
 * parent's pages on device 2's coherent memory, then fork; the child's own
 * mirror (device 0) write-faults the range: every page must be mapped.
 */
TEST(child_write_fault_after_coherent_migration)
{
	unsigned long n = 1024, i;
	__u64 *info = calloc(n, sizeof(*info));
	char *buf, *data = malloc(n * PAGE);
	int fd2 = open("/dev/hmm_dmirror2", O_RDWR), status;
	pid_t pid;

	ASSERT_NE(info, NULL);
	ASSERT_NE(data, NULL);
	if (fd2 < 0)
		SKIP(return, "no device-coherent device");
	buf = mmap(NULL, n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(buf, MAP_FAILED);
	if (access(EDU_DRIVER, F_OK))
		SKIP(return, "hmm_dummy is not on an edu device (edu=1)");
	memset(buf, 1, n * PAGE);
	ASSERT_EQ(dmirror(fd2, HMM_DMIRROR_MIGRATE_TO_DEV, buf, data, n), 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		struct hmm_dummy_range r = { .addr = (uintptr_t)buf, .npages = n, .write = 1 };
		int fd0 = open("/dev/hmm_dmirror0", O_RDWR), bad = 0;

		if (fd0 < 0)
			_exit(4);
		if (ioctl(fd0, HMM_DUMMY_FAULT, &r))
			_exit(2);
		if (dma_info(fd0, buf, n, info))
			_exit(3);
		for (i = 0; i < n; i++) {
			if (info[i] == HMM_DUMMY_DMA_NONE) {
				if (bad++ < 8)
					fprintf(stderr, "page %lu not mapped after the fault\n", i);
			}
		}
		fprintf(stderr, "%d of %lu pages not mapped\n", bad, n);
		_exit(bad ? 1 : 0);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(WEXITSTATUS(status), 0);
	munmap(buf, n * PAGE);
	close(fd2);
	free(info);
	free(data);
}

/* The edu devices' PCI addresses (bound to hmm_dummy), at most 4. */
static int edu_devices(char bdf[][16])
{
	glob_t g;
	size_t i;
	int n = 0;

	if (glob(EDU_DRIVER "/0000:*", 0, NULL, &g))
		return 0;
	for (i = 0; i < g.gl_pathc && n < 4; i++)
		snprintf(bdf[n++], 16, "%s", strrchr(g.gl_pathv[i], '/') + 1);
	globfree(&g);
	return n;
}

TEST(unbind_with_live_mirrors)
{
	char bdf[4][16], *buf, data[NPAGES * PAGE];
	__u64 info[NPAGES];
	int fd0, fd1, n, i;

	fd0 = open("/dev/hmm_dmirror0", O_RDWR);
	fd1 = open("/dev/hmm_dmirror1", O_RDWR);
	ASSERT_GE(fd0, 0);
	ASSERT_GE(fd1, 0);
	n = edu_devices(bdf);
	if (!n)
		SKIP(return, "no edu device bound to hmm_dummy");
	buf = mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		   -1, 0);
	ASSERT_NE(buf, MAP_FAILED);
	memset(buf, 9, NPAGES * PAGE);
	ASSERT_EQ(dmirror(fd0, HMM_DMIRROR_READ, buf, data, NPAGES), 0);
	ASSERT_EQ(dmirror(fd1, HMM_DMIRROR_WRITE, buf, data, NPAGES), 0);
	for (i = 0; i < n; i++)
		ASSERT_EQ(write_file(EDU_DRIVER "/unbind", bdf[i]), 0);
	/* Unmapped (DMA-API debugging checks none is left at unbind). */
	ASSERT_EQ(dma_info(fd0, buf, NPAGES, info), 0);
	ASSERT_EQ(mapped(info, NPAGES), 0);
	ASSERT_EQ(dmirror(fd0, HMM_DMIRROR_READ, buf, data, NPAGES), -ENODEV);
	ASSERT_EQ(dmirror(fd1, HMM_DMIRROR_WRITE, buf, data, NPAGES), -ENODEV);
	ASSERT_EQ(open("/dev/hmm_dmirror0", O_RDWR), -1);
	ASSERT_EQ(errno, ENODEV);
	/* The CPU's memory is untouched, closing is fine. */
	for (i = 0; i < (int)(NPAGES * PAGE); i++)
		ASSERT_EQ(buf[i], 9);
	close(fd0);
	close(fd1);
	for (i = 0; i < n; i++)
		ASSERT_EQ(write_file(EDU_DRIVER "/bind", bdf[i]), 0);
	fd0 = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_GE(fd0, 0);
	ASSERT_EQ(dmirror(fd0, HMM_DMIRROR_READ, buf, data, NPAGES), 0);
	ASSERT_EQ(memcmp(data, buf, NPAGES * PAGE), 0);
	close(fd0);
	munmap(buf, NPAGES * PAGE);
}

TEST_HARNESS_MAIN
