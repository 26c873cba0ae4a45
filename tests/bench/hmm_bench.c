// SPDX-License-Identifier: GPL-2.0
/*
 * The end-to-end benchmark: the same workloads through the dmirror uapi
 * (lib/test_hmm_uapi.h) against whichever driver owns /dev/hmm_dmirror0,
 * hmm_dummy on hmm-rs, rust_dmirror or the kernel's lib/test_hmm.ko, in the
 * same boot.
 *
 *   hmm_bench [-s] [-n RUNS] [-m MIB] [-o W] [-u] LABEL
 *                                      runs every workload (-o: those whose
 *                                      name starts with W, or with one of
 *                                      W1+W2+...), prints results
 *   hmm_bench [-s] [-n RUNS] [-o W] -x NA,NB LABEL_A FILE_A LABEL_B FILE_B
 *                                      two drivers side by side, run by
 *                                      run in turn (interleave()), the
 *                                      dmirror uapi's rows only
 *   hmm_bench -c OURS THEIRS [OURS_LABEL THEIRS_LABEL]
 *                                      the side-by-side table of two runs
 *                                      (labels: hmm_dummy and test_hmm)
 *   hmm_bench [-s] -k                  the core's floor (hmm_rs/core_bench):
 *                                      fault and snapshot against the bare
 *                                      hmm_range_fault() walk, on our memory
 *
 * Each workload times one operation per run and reports nanoseconds per
 * 4 KiB page, median and minimum. Each run checks the data it moved (or
 * what the operation must have done to the mirrors) and any mismatch is a
 * "FAIL:" line and a non-zero exit: numbers are printed, never judged.
 * -s is the short version make test runs: small sizes, 3 runs.
 *
 * -u (and LABEL rust_dmirror): the device answers only the dmirror uapi,
 * none of hmm_dummy's own ioctls (rust_dmirror): none is sent, not even to
 * probe, and the rows that need one are left out (listed as it starts):
 * those test_hmm.ko runs too. Without -u, hmm_dummy is told from test_hmm.ko
 * by probing (is_dummy()).
 *
 * Device memory under pressure (hmm_dummy's devmem_mib, evict and thrash
 * control; the uapi at the end of tests/hmm_dummy_uapi.h):
 *
 *   oversub_half, oversub_2x, oversub_4x: a working set of 0.5, 2 and 4
 *   times MIB (-m MIB; default: hmm_dummy's devmem_mib parameter if the
 *   module is loaded, else 64) swept to the device 3 times, 2 MiB per
 *   MIGRATE_TO_DEV, on an emptied device (HMM_DMIRROR_RELEASE); "placed P
 *   of T": the pages the device then held, of those swept. Both drivers.
 *   They run only with -m, or when hmm_dummy's devmem_mib is 64 or less
 *   (4 x 512 MiB does not fit the VM), -o or not. To run them:
 *     insmod hmm_dummy.ko devmem_mib=64 [evict=0]; hmm_bench -o oversub hmm_dummy
 *     insmod test_hmm.ko;                       hmm_bench -m 64 -o oversub test_hmm
 *   pingpong_nothrash, pingpong_thrash (hmm_dummy only): one 2 MiB block
 *   moved to the device and written by the CPU, 200 times (-s: 40), thrash
 *   control off, then on (HMM_DUMMY_SET_THRASH); "moves M of N": the
 *   alternations after which the whole block was on the device.
 *   prefer_fault (hmm_dummy only: HMM_DUMMY_ADVISE PREFER_DEVICE, then the
 *   READ whose fault migrates) against fault_migrate (MIGRATE_TO_DEV then
 *   READ, both drivers), on the migration rows' size.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <lib/test_hmm_uapi.h>
#include "../hmm_dummy_uapi.h"

#define PAGE		4096UL
#define HUGE		(2UL << 20)
#define MAX_RUNS	64
#define MAX_RESULTS	128
#define MAX_MIRRORS	8
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

static unsigned int runs = 5;
/* Bytes per workload: read/write/snapshot; migration; invalidation. */
static unsigned long size = 64UL << 20, msize = 32UL << 20, isize = 16UL << 20;
static int failures;
/* -o: run only the workloads whose name starts with this. */
static const char *only = "";
/*
 * The oversubscription rows' device memory, MiB (-m; else hmm_dummy's
 * devmem_mib parameter; else 64), and where it came from.
 */
#define DEVMEM_MIB_PARAM	"/sys/module/hmm_dummy/parameters/devmem_mib"
static unsigned long devmem_mib = 64;
static const char *devmem_from = "the default";
static int devmem_given;	/* -m */
/* The ping-pong rows' alternations. */
static unsigned int alternations = 200;
/* -u: the dmirror uapi only: no HMM_DUMMY_* ioctl is sent. */
static int uapi_only;
/* -x, after its first round: the workloads' notes ("# ...") were printed. */
static int noted;

/* Whether -o selects @name: it starts with one of -o's '+'-separated words. */
static int want(const char *name)
{
	const char *w = only;

	for (;;) {
		size_t n = strcspn(w, "+");

		if (!strncmp(name, w, n))
			return 1;
		if (!w[n])
			return 0;
		w += n + 1;
	}
}

struct result {
	const char *name;
	unsigned int n;
	double ns[MAX_RUNS];	/* per page, one per run */
	unsigned long long faults;	/* the driver's cmd.faults, summed */
	/* oversub: the pages on the device after each step, of those swept */
	unsigned long long placed, total;
	/* pingpong: the alternations after which the block was on the device */
	unsigned long long moves, tries;
};

/* One driver's results; -x keeps two and runs the workloads into each in turn. */
struct table {
	struct result r[MAX_RESULTS];
	unsigned int n;
};

static struct table tables[2], *table = &tables[0];
/* The node the workloads open (-x: the current side's). */
static char device[32] = "/dev/hmm_dmirror0";

static void fail(const char *what, const char *why)
{
	printf("FAIL: %s: %s (%s)\n", what, why, device);
	failures++;
}

static struct result *result(const char *name)
{
	unsigned int i;

	for (i = 0; i < table->n; i++)
		if (!strcmp(table->r[i].name, name))
			return &table->r[i];
	if (table->n == MAX_RESULTS) {
		fprintf(stderr, "more than %d workloads\n", MAX_RESULTS);
		exit(2);
	}
	table->r[table->n].name = name;
	return &table->r[table->n++];
}

static unsigned long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* One run of @name: @ns over @pages. */
static void record_ns(const char *name, unsigned long long ns, unsigned long pages)
{
	struct result *r = result(name);

	if (r->n < MAX_RUNS && pages)
		r->ns[r->n++] = (double)ns / pages;
}

static void record(const char *name, unsigned long long t0, unsigned long long t1,
		   unsigned long bytes)
{
	record_ns(name, t1 - t0, bytes / PAGE);
}

/* The driver's errno for @req over @npages at @addr, 0 on success. */
static int dmirror(int fd, unsigned long req, void *addr, void *ptr,
		   unsigned long bytes, struct hmm_dmirror_cmd *out)
{
	struct hmm_dmirror_cmd cmd = {
		.addr = (uintptr_t)addr, .ptr = (uintptr_t)ptr, .npages = bytes / PAGE,
	};
	int ret = ioctl(fd, req, &cmd) ? errno : 0;

	if (out)
		*out = cmd;
	return ret;
}

static int open_device(void)
{
	int fd = open(device, O_RDWR);

	if (fd < 0) {
		perror(device);
		exit(2);
	}
	return fd;
}

/* Anonymous memory, 2 MiB aligned; THP-backed if @thp, else 4 KiB pages. */
static void *map(unsigned long bytes, int thp)
{
	char *p = mmap(NULL, bytes + HUGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *a;

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	a = (char *)(((uintptr_t)p + HUGE - 1) & ~(HUGE - 1));
	if (a > p)
		munmap(p, a - p);
	munmap(a + bytes, p + HUGE - a);
	madvise(a, bytes, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	return a;
}

/*
 * The buffer a workload's device reads into or writes from, @bytes of it:
 * one mapping of 4 KiB pages kept for the process, zeroed as each workload
 * takes it (nothing left from an earlier one), so that no timed operation
 * faults it in: each run of -x is its workload's first, and the first run
 * of the others would time that too.
 */
static void *scratch(unsigned long bytes)
{
	static char *buf;
	static unsigned long len;

	if (bytes > len) {
		if (buf)
			munmap(buf, len);
		buf = map(bytes, 0);
		len = bytes;
	}
	memset(buf, 0, bytes);
	return buf;
}

/*
 * A THP row must measure huge pages: the kB of AnonHugePages of the VMA
 * that holds [buf, +bytes) (a larger VMA may hold other huge buffers: this
 * can only pass wrongly, not fail wrongly) must cover the range.
 */
static void check_huge(const char *what, void *buf, unsigned long bytes)
{
	unsigned long lo, hi, kb = 0, addr = (unsigned long)buf;
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[256], why[96];
	int in = 0;

	if (!f) {
		fail(what, "cannot read /proc/self/smaps");
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
			in = lo <= addr && addr + bytes <= hi;
		else if (in && sscanf(line, "AnonHugePages: %lu kB", &kb) == 1)
			break;
	}
	fclose(f);
	if (!in) {
		fail(what, "no VMA holds the buffer in /proc/self/smaps");
		return;
	}
	if (kb * 1024 < bytes) {
		snprintf(why, sizeof(why), "only %lu of %lu KiB in huge pages", kb, bytes / 1024);
		fail(what, why);
	}
}

/* Every word of page i holds seed << 32 | i. */
static void fill(void *buf, unsigned long bytes, uint32_t seed)
{
	unsigned long long *w = buf;
	unsigned long i, n = bytes / sizeof(*w);

	for (i = 0; i < n; i++)
		w[i] = (unsigned long long)seed << 32 | (i * sizeof(*w) / PAGE);
}

static int check(const char *what, const void *buf, unsigned long bytes, uint32_t seed)
{
	const unsigned long long *w = buf;
	unsigned long i, n = bytes / sizeof(*w);

	for (i = 0; i < n; i++) {
		if (w[i] != ((unsigned long long)seed << 32 | (i * sizeof(*w) / PAGE))) {
			char why[96];

			snprintf(why, sizeof(why), "page %lu holds %#llx, not seed %#x",
				 i * sizeof(*w) / PAGE, w[i], seed);
			fail(what, why);
			return -1;
		}
	}
	return 0;
}

static void check_ok(const char *what, const char *op, int err)
{
	char why[96];

	if (err) {
		snprintf(why, sizeof(why), "%s: %s", op, strerror(err));
		fail(what, why);
	}
}

static void check_pages(const char *what, const struct hmm_dmirror_cmd *cmd)
{
	char why[96];

	result(what)->faults += cmd->faults;
	if (cmd->cpages != cmd->npages) {
		snprintf(why, sizeof(why), "%llu of %llu pages",
			 (unsigned long long)cmd->cpages, (unsigned long long)cmd->npages);
		fail(what, why);
	}
}

/*
 * Whether every page of [buf, +bytes) is in system memory (@dev false) or
 * in this device's private memory (@dev true), as a snapshot reports it.
 * (test_hmm counts a huge page as one in cpages: the pages themselves are
 * what to check.)
 */
static void check_where(const char *what, int fd, void *buf, unsigned long bytes, int dev)
{
	unsigned char *perm = malloc(bytes / PAGE);
	unsigned long i;
	int err = dmirror(fd, HMM_DMIRROR_SNAPSHOT, buf, perm, bytes, NULL);

	check_ok(what, "SNAPSHOT", err);
	for (i = 0; !err && i < bytes / PAGE; i++) {
		int on_dev = (perm[i] & 0xf0) == HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL;

		if (dev != on_dev) {
			fail(what, dev ? "a page is not in device memory" :
					 "a page is still in device memory");
			break;
		}
	}
	free(perm);
}

/* A device read of [buf, +bytes) through a new mirror, checked. */
static void read_cold(const char *name, int thp)
{
	char *out = scratch(size);
	unsigned int r;

	for (r = 0; r < runs; r++) {
		char *buf = map(size, thp);
		struct hmm_dmirror_cmd cmd;
		int fd = open_device();
		unsigned long long t0;

		fill(buf, size, r + 1);
		if (thp)
			check_huge(name, buf, size);
		t0 = now_ns();
		check_ok(name, "READ", dmirror(fd, HMM_DMIRROR_READ, buf, out, size, &cmd));
		record(name, t0, now_ns(), size);
		check(name, out, size, r + 1);
		check_pages(name, &cmd);
		close(fd);
		munmap(buf, size);
	}
}

/* Reads and writes through a mirror that already holds the range. */
static void warm(void)
{
	char *buf = map(size, 0), *out = map(size, 0);
	struct hmm_dmirror_cmd cmd;
	int fd = open_device();
	unsigned int r;
	unsigned long long t0;

	fill(buf, size, 7);
	check_ok("read_warm", "READ", dmirror(fd, HMM_DMIRROR_READ, buf, out, size, NULL));
	for (r = 0; r < runs; r++) {
		memset(out, 0, size);
		t0 = now_ns();
		check_ok("read_warm", "READ", dmirror(fd, HMM_DMIRROR_READ, buf, out, size, &cmd));
		record("read_warm", t0, now_ns(), size);
		check("read_warm", out, size, 7);
		check_pages("read_warm", &cmd);
	}
	for (r = 0; r < runs; r++) {
		fill(out, size, 100 + r);
		t0 = now_ns();
		check_ok("write_warm", "WRITE",
			 dmirror(fd, HMM_DMIRROR_WRITE, buf, out, size, &cmd));
		record("write_warm", t0, now_ns(), size);
		check("write_warm", buf, size, 100 + r);
		check_pages("write_warm", &cmd);
	}
	close(fd);
	munmap(buf, size);
	munmap(out, size);
}

/* A device write through a new mirror into memory the CPU has written. */
static void write_cold(void)
{
	char *src = scratch(size);
	unsigned int r;

	for (r = 0; r < runs; r++) {
		char *buf = map(size, 0);
		struct hmm_dmirror_cmd cmd;
		int fd = open_device();
		unsigned long long t0;

		fill(buf, size, 0xdead);
		fill(src, size, 200 + r);
		t0 = now_ns();
		check_ok("write_cold", "WRITE",
			 dmirror(fd, HMM_DMIRROR_WRITE, buf, src, size, &cmd));
		record("write_cold", t0, now_ns(), size);
		check("write_cold", buf, size, 200 + r);
		check_pages("write_cold", &cmd);
		close(fd);
		munmap(buf, size);
	}
}

static void snapshot(void)
{
	char *buf = map(size, 0);
	unsigned char *perm = malloc(size / PAGE);
	struct hmm_dmirror_cmd cmd;
	int fd = open_device();
	unsigned long i;
	unsigned int r;
	unsigned long long t0;

	fill(buf, size, 3);
	for (r = 0; r < runs; r++) {
		memset(perm, 0xee, size / PAGE);
		t0 = now_ns();
		check_ok("snapshot", "SNAPSHOT",
			 dmirror(fd, HMM_DMIRROR_SNAPSHOT, buf, perm, size, &cmd));
		record("snapshot", t0, now_ns(), size);
		check_pages("snapshot", &cmd);
		/* test_hmm's convention: writable pages are just PROT_WRITE. */
		for (i = 0; i < size / PAGE; i++) {
			if (perm[i] != HMM_DMIRROR_PROT_WRITE) {
				fail("snapshot", "a written page is not reported writable");
				break;
			}
		}
	}
	close(fd);
	free(perm);
	munmap(buf, size);
}

enum inval { MUNMAP, DONTNEED, MPROTECT };

/*
 * One CPU page-table change over memory that @k mirrors hold, then what
 * the mirrors must see: nothing (munmap), zeros (MADV_DONTNEED), or
 * read-only data (mprotect(PROT_READ)).
 */
static void invalidate(enum inval how, unsigned int k)
{
	static const char *const names[3][MAX_MIRRORS + 1] = {
		{ [1] = "munmap_x1", [2] = "munmap_x2", [4] = "munmap_x4", [8] = "munmap_x8" },
		{ [1] = "dontneed_x1", [2] = "dontneed_x2", [4] = "dontneed_x4",
		  [8] = "dontneed_x8" },
		{ [1] = "mprotect_x1", [2] = "mprotect_x2", [4] = "mprotect_x4",
		  [8] = "mprotect_x8" },
	};
	const char *name = names[how][k];
	char *out = scratch(isize);
	int fd[MAX_MIRRORS];
	unsigned int r, j;

	for (r = 0; r < runs; r++) {
		char *buf = map(isize, 0);
		unsigned long long t0, t1;
		int err;

		fill(buf, isize, 300 + r);
		for (j = 0; j < k; j++) {
			fd[j] = open_device();
			check_ok(name, "READ", dmirror(fd[j], HMM_DMIRROR_READ, buf, out, isize,
						       NULL));
		}
		t0 = now_ns();
		if (how == MUNMAP)
			err = munmap(buf, isize);
		else if (how == DONTNEED)
			err = madvise(buf, isize, MADV_DONTNEED);
		else
			err = mprotect(buf, isize, PROT_READ);
		t1 = now_ns();
		check_ok(name, "the CPU operation", err ? errno : 0);
		record(name, t0, t1, isize);
		for (j = 0; j < k; j++) {
			/* All of it through one mirror, a page through the others. */
			unsigned long n = j ? PAGE : isize;

			if (how == MUNMAP) {
				err = dmirror(fd[j], HMM_DMIRROR_READ, buf, out, PAGE, NULL);
				if (err != EFAULT)
					fail(name, "a device read after munmap: not EFAULT");
			} else if (how == DONTNEED) {
				check_ok(name, "READ",
					 dmirror(fd[j], HMM_DMIRROR_READ, buf, out, n, NULL));
				for (unsigned long i = 0; i < n; i += PAGE)
					if (*(unsigned long long *)(out + i)) {
						fail(name, "old data after MADV_DONTNEED");
						break;
					}
			} else {
				err = dmirror(fd[j], HMM_DMIRROR_WRITE, buf, out, PAGE, NULL);
				if (err != EPERM)
					fail(name, "a device write after PROT_READ was not EPERM");
				check_ok(name, "READ",
					 dmirror(fd[j], HMM_DMIRROR_READ, buf, out, n, NULL));
				check(name, out, n, 300 + r);
			}
			close(fd[j]);
		}
		if (how != MUNMAP)
			munmap(buf, isize);
	}
}

/*
 * Freshly written memory to the device through a new mirror, then back:
 * the device must read what the CPU wrote, and the CPU too afterwards.
 */
static void migrate_fresh(int thp)
{
	const char *to_dev = thp ? "migrate_to_dev_thp" : "migrate_to_dev";
	const char *to_sys = thp ? "migrate_to_sys_thp" : "migrate_to_sys";
	char *out = scratch(msize);
	unsigned int r;

	for (r = 0; r < runs; r++) {
		char *buf = map(msize, thp);
		struct hmm_dmirror_cmd cmd;
		int fd = open_device();
		unsigned long long t0;

		fill(buf, msize, 400 + r);
		if (thp)
			check_huge(to_dev, buf, msize);
		t0 = now_ns();
		check_ok(to_dev, "MIGRATE_TO_DEV",
			 dmirror(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, out, msize, &cmd));
		record(to_dev, t0, now_ns(), msize);
		check(to_dev, out, msize, 400 + r);
		check_where(to_dev, fd, buf, msize, 1);
		t0 = now_ns();
		check_ok(to_sys, "MIGRATE_TO_SYS",
			 dmirror(fd, HMM_DMIRROR_MIGRATE_TO_SYS, buf, NULL, msize, &cmd));
		record(to_sys, t0, now_ns(), msize);
		check_where(to_sys, fd, buf, msize, 0);
		check(to_sys, buf, msize, 400 + r);
		close(fd);
		munmap(buf, msize);
	}
}

/* To the device and back through one mirror, again and again. */
static void round_trips(int thp)
{
	const char *name = thp ? "round_trip_thp" : "round_trip";
	char *buf = map(msize, thp), *out = map(msize, 0);
	struct hmm_dmirror_cmd cmd;
	int fd = open_device();
	unsigned int r;
	unsigned long long t0, t1;

	fill(buf, msize, 500);
	check_ok(name, "MIGRATE_TO_DEV",
		 dmirror(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, out, msize, NULL));
	check_ok(name, "MIGRATE_TO_SYS",
		 dmirror(fd, HMM_DMIRROR_MIGRATE_TO_SYS, buf, NULL, msize, NULL));
	for (r = 0; r < runs; r++) {
		fill(buf, msize, 501 + r);
		if (thp)
			check_huge(name, buf, msize);
		t0 = now_ns();
		check_ok(name, "MIGRATE_TO_DEV",
			 dmirror(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, out, msize, &cmd));
		check_ok(name, "MIGRATE_TO_SYS",
			 dmirror(fd, HMM_DMIRROR_MIGRATE_TO_SYS, buf, NULL, msize, &cmd));
		t1 = now_ns();
		record(name, t0, t1, msize);
		check_where(name, fd, buf, msize, 0);
		check(name, out, msize, 501 + r);
		check(name, buf, msize, 501 + r);
	}
	close(fd);
	munmap(buf, msize);
	munmap(out, msize);
}

struct reader {
	int fd;
	char *buf, *out;
	unsigned long bytes;
	int err;
};

static void *reader(void *arg)
{
	struct reader *t = arg;

	t->err = dmirror(t->fd, HMM_DMIRROR_READ, t->buf, t->out, t->bytes, NULL);
	return NULL;
}

/* Two threads of one process fault their halves through one mirror at once. */
static void two_threads(void)
{
	char *out = scratch(size);
	unsigned int r, j;

	for (r = 0; r < runs; r++) {
		char *buf = map(size, 0);
		struct reader t[2];
		pthread_t th[2];
		int fd = open_device();
		unsigned long long t0;

		fill(buf, size, 600 + r);
		t0 = now_ns();
		for (j = 0; j < 2; j++) {
			t[j] = (struct reader) { .fd = fd, .buf = buf + j * size / 2,
						 .out = out + j * size / 2, .bytes = size / 2 };
			pthread_create(&th[j], NULL, reader, &t[j]);
		}
		for (j = 0; j < 2; j++) {
			pthread_join(th[j], NULL);
			check_ok("two_threads", "READ", t[j].err);
		}
		record("two_threads", t0, now_ns(), size);
		check("two_threads", out, size, 600 + r);
		close(fd);
		munmap(buf, size);
	}
}

static int noise_stop;
static unsigned long noise_ops;

/* Maps, touches and unmaps 64 KiB that nobody mirrors, until told to stop. */
static void *noise(void *arg)
{
	while (!__atomic_load_n(&noise_stop, __ATOMIC_RELAXED)) {
		char *p = mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			break;
		p[0] = 1;
		munmap(p, 16 * PAGE);
		noise_ops++;
	}
	return NULL;
}

/* read_cold while another thread keeps unmapping unrelated memory. */
static void read_noise(void)
{
	pthread_t th;

	noise_stop = 0;
	noise_ops = 0;
	pthread_create(&th, NULL, noise, NULL);
	read_cold("read_cold_noise", 0);
	__atomic_store_n(&noise_stop, 1, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	if (!noted)
		printf("# read_cold_noise: %lu unrelated munmaps meanwhile\n", noise_ops);
}

/*
 * Scattered device reads, as a GPU's fault buffer delivers them: @n reads
 * of 4 KiB pages of @bytes, in random order, a quarter of them repeats of
 * earlier ones. The addresses, as page indices.
 */
static unsigned long *scatter_pages(unsigned long n, unsigned long bytes)
{
	unsigned long *k = malloc(n * sizeof(*k)), i;
	unsigned int seed = 42;

	if (!k) {
		perror("malloc");
		exit(2);
	}
	for (i = 0; i < n; i++)
		k[i] = i % 4 == 3 ? k[rand_r(&seed) % i] : rand_r(&seed) % (bytes / PAGE);
	/* Shuffled, so that repeats come anywhere. */
	for (i = n - 1; i > 0; i--) {
		unsigned long j = rand_r(&seed) % (i + 1), t = k[i];

		k[i] = k[j];
		k[j] = t;
	}
	return k;
}

/* Whether the driver has HMM_DUMMY_BATCH (hmm_dummy; never asked with -u). */
static int have_batch(void)
{
	struct hmm_dummy_batch b = { 0 };
	int fd, ok;

	if (uapi_only)
		return 0;
	fd = open_device();
	ok = !ioctl(fd, HMM_DUMMY_BATCH, &b);
	close(fd);
	return ok;
}

/*
 * The @n pages read into @out: page i must be page @k[i] of memory filled
 * with @seed, and entry i of the batches that read them (@e, if batched)
 * must have succeeded. Reports the first that is not.
 */
static void check_reads(const char *name, const struct hmm_dummy_batch_entry *e,
			const unsigned long *k, unsigned long n, const char *out, uint32_t seed)
{
	unsigned long i, j;

	for (i = 0; i < n; i++) {
		const unsigned long long *w = (const void *)(out + i * PAGE);

		if (e && e[i].status) {
			fail(name, strerror(-e[i].status));
			break;
		}
		for (j = 0; j < PAGE / sizeof(*w); j++)
			if (w[j] != ((unsigned long long)seed << 32 | k[i]))
				break;
		if (j < PAGE / sizeof(*w)) {
			fail(name, "a page read is not that page's");
			break;
		}
	}
}

/*
 * One run of the scattered reads through a new mirror of fresh memory:
 * one READ per page (@per 0), or HMM_DUMMY_BATCH of @per entries at a
 * time. Checks every page read. Without @out, the pages are only faulted
 * (as a GPU's fault handler does before the GPU replays its accesses):
 * one HMM_DUMMY_FAULT per page (@per 0), or batches without data.
 */
static void scatter_run(const char *name, const unsigned long *k, unsigned long n,
			unsigned long bytes, unsigned int per, char *out, uint32_t seed)
{
	struct hmm_dummy_batch_entry *e = calloc(n, sizeof(*e));
	char *buf = map(bytes, 0);
	int fd = open_device();
	unsigned long long t0, t1;
	unsigned long i;

	fill(buf, bytes, seed);
	for (i = 0; i < n; i++)
		e[i].addr = (uintptr_t)buf + k[i] * PAGE;
	t0 = now_ns();
	for (i = 0; i < n; i += per ? per : 1) {
		struct hmm_dummy_batch b = {
			.entries = (uintptr_t)(e + i),
			.data = out ? (uintptr_t)(out + i * PAGE) : 0,
			.count = per && n - i > per ? per : per ? n - i : 1,
		};
		struct hmm_dummy_range f = { .addr = e[i].addr, .npages = 1 };

		if (!per && !out) {
			check_ok(name, "FAULT", ioctl(fd, HMM_DUMMY_FAULT, &f) ? errno : 0);
			continue;
		}
		if (!per) {
			check_ok(name, "READ", dmirror(fd, HMM_DMIRROR_READ, buf + k[i] * PAGE,
						       out + i * PAGE, PAGE, NULL));
			continue;
		}
		check_ok(name, "HMM_DUMMY_BATCH", ioctl(fd, HMM_DUMMY_BATCH, &b) ? errno : 0);
	}
	t1 = now_ns();
	record(name, t0, t1, n * PAGE);
	if (out)
		check_reads(name, per ? e : NULL, k, n, out, seed);
	for (i = 0; !out && per && i < n; i++)
		if (e[i].status) {
			fail(name, strerror(-e[i].status));
			break;
		}
	close(fd);
	munmap(buf, bytes);
	free(e);
}

/*
 * 4096 scattered reads over 64 MiB (-s: 1024 over 16 MiB): one READ per
 * page (both drivers); on hmm_dummy also one HMM_DUMMY_BATCH per page and
 * batches of 256 (hmm_rs_mirror_fault_batch()). The same pages only
 * faulted, on hmm_dummy: one HMM_DUMMY_FAULT per page (scatter_fault),
 * batches of 256 without data (scatter_fault256). ns per page.
 */
static void scattered_reads(void)
{
	unsigned long n = size < (64UL << 20) ? 1024 : 4096, bytes = n * 4 * PAGE;
	unsigned long *k = scatter_pages(n, bytes);
	char *out = scratch(n * PAGE);
	int batch = have_batch();
	unsigned int r;

	if (!noted)
		printf("# scatter: %lu reads of 4 KiB over %lu MiB, random order, 25%% repeats\n",
		       n, bytes >> 20);
	for (r = 0; r < runs; r++) {
		scatter_run("scatter_read", k, n, bytes, 0, out, 800 + r);
		if (!batch)
			continue;
		scatter_run("scatter_batch1", k, n, bytes, 1, out, 810 + r);
		scatter_run("scatter_batch256", k, n, bytes, 256, out, 820 + r);
		scatter_run("scatter_fault", k, n, bytes, 0, NULL, 830 + r);
		scatter_run("scatter_fault256", k, n, bytes, 256, NULL, 840 + r);
	}
	free(k);
}

#define WINDOW_PAGES	(HUGE / PAGE)
#define WINDOW_THREADS	4

/* One thread of window_run(): its batch, once all are ready. */
struct window_thread {
	int fd;
	struct hmm_dummy_batch_entry *e;	/* WINDOW_PAGES reads */
	char *out;
	pthread_barrier_t *go;
	unsigned long long t0, t1;
	unsigned int refaults;
	int err;
};

static void *window_thread(void *arg)
{
	struct window_thread *t = arg;
	struct hmm_dummy_batch b = {
		.entries = (uintptr_t)t->e, .data = (uintptr_t)t->out, .count = WINDOW_PAGES,
	};

	pthread_barrier_wait(t->go);
	t->t0 = now_ns();
	t->err = ioctl(t->fd, HMM_DUMMY_BATCH, &b) ? errno : 0;
	t->t1 = now_ns();
	t->refaults = b.refaults;
	return NULL;
}

/*
 * One run: a new mirror of a fresh 2 MiB of 4 KiB pages the CPU wrote, and
 * @nt threads each reading all of it with one HMM_DUMMY_BATCH of
 * WINDOW_PAGES entries, thread j in the order @k[j], into @out[j], started
 * together (a barrier). The time from the first thread's start to the last
 * one's end, per page of the window; every page read is checked. Returns
 * the refaults.
 */
static unsigned long window_run(const char *name, unsigned int nt, unsigned long *const *k,
				struct hmm_dummy_batch_entry *const *e, char *const *out,
				uint32_t seed)
{
	struct window_thread t[WINDOW_THREADS];
	pthread_t th[WINDOW_THREADS];
	pthread_barrier_t go;
	char *buf = map(HUGE, 0);
	int fd = open_device();
	unsigned long long t0 = ~0ULL, t1 = 0;
	unsigned long refaults = 0, i;
	unsigned int j;

	fill(buf, HUGE, seed);
	pthread_barrier_init(&go, NULL, nt);
	for (j = 0; j < nt; j++) {
		for (i = 0; i < WINDOW_PAGES; i++)
			e[j][i] = (struct hmm_dummy_batch_entry) {
				.addr = (uintptr_t)buf + k[j][i] * PAGE,
			};
		t[j] = (struct window_thread) { .fd = fd, .e = e[j], .out = out[j], .go = &go };
		if (pthread_create(&th[j], NULL, window_thread, &t[j])) {
			perror("pthread_create");
			exit(2);
		}
	}
	for (j = 0; j < nt; j++) {
		pthread_join(th[j], NULL);
		t0 = t[j].t0 < t0 ? t[j].t0 : t0;
		t1 = t[j].t1 > t1 ? t[j].t1 : t1;
	}
	record(name, t0, t1, HUGE);
	for (j = 0; j < nt; j++) {
		check_ok(name, "HMM_DUMMY_BATCH", t[j].err);
		if (!t[j].err && out[j])
			check_reads(name, e[j], k[j], WINDOW_PAGES, out[j], seed);
		for (i = 0; !t[j].err && !out[j] && i < WINDOW_PAGES; i++)
			if (e[j][i].status) {
				fail(name, strerror(-e[j][i].status));
				break;
			}
		refaults += t[j].refaults;
	}
	pthread_barrier_destroy(&go);
	close(fd);
	munmap(buf, HUGE);
	return refaults;
}

/*
 * The floor of a window: one HMM_DUMMY_FAULT of the whole 2 MiB on a new
 * mirror of fresh memory, as window_run()'s one thread (window_range_1t).
 */
static void window_range_run(uint32_t seed)
{
	struct hmm_dummy_range f = { .npages = WINDOW_PAGES };
	char *buf = map(HUGE, 0);
	int fd = open_device();
	unsigned long long t0, t1;

	fill(buf, HUGE, seed);
	f.addr = (uintptr_t)buf;
	t0 = now_ns();
	check_ok("window_range_1t", "FAULT", ioctl(fd, HMM_DUMMY_FAULT, &f) ? errno : 0);
	t1 = now_ns();
	record("window_range_1t", t0, t1, HUGE);
	close(fd);
	munmap(buf, HUGE);
}

/*
 * Threads faulting the same 2 MiB window at once through batches
 * (hmm_dummy only): one thread's batch of its 512 pages (window_batch_1t),
 * against four threads' on one mirror, each in another random order
 * (window_batch_4t: from the first start to the last end). Each thread
 * also copies its 2 MiB out, which fewer vCPUs than threads serialize; the
 * same without data (window_fault_1t, _4t) only faults, as a GPU's fault
 * handler does. Target: 4 threads at most 1.2 times one
 * (window_fault_4t_vs_1t). Time per page of the window, whatever the
 * number of threads.
 */
static void window_batches(void)
{
	unsigned long *k[WINDOW_THREADS], refaults[2] = { 0, 0 }, i;
	struct hmm_dummy_batch_entry *e[WINDOW_THREADS];
	char *out[WINDOW_THREADS], *none[WINDOW_THREADS] = { NULL };
	unsigned int j, r;

	if (!have_batch()) {
		if (!uapi_only)	/* -u: listed as it starts */
			printf("# window: this driver has no HMM_DUMMY_BATCH\n");
		return;
	}
	printf("# window: %lu reads of one 2 MiB window of 4 KiB pages per batch, %s\n",
	       WINDOW_PAGES, "1 and 4 threads at once on one mirror");
	for (j = 0; j < WINDOW_THREADS; j++) {
		unsigned int seed = 900 + j;

		k[j] = malloc(WINDOW_PAGES * sizeof(*k[j]));
		e[j] = calloc(WINDOW_PAGES, sizeof(*e[j]));
		if (!k[j] || !e[j]) {
			perror("malloc");
			exit(2);
		}
		/* Every page once, shuffled. */
		for (i = 0; i < WINDOW_PAGES; i++)
			k[j][i] = i;
		for (i = WINDOW_PAGES - 1; i > 0; i--) {
			unsigned long x = rand_r(&seed) % (i + 1), y = k[j][i];

			k[j][i] = k[j][x];
			k[j][x] = y;
		}
		out[j] = map(HUGE, 0);
		memset(out[j], 0, HUGE);
	}
	for (r = 0; r < runs; r++) {
		refaults[0] += window_run("window_batch_1t", 1, k, e, out, 910 + r);
		refaults[1] += window_run("window_batch_4t", WINDOW_THREADS, k, e, out, 920 + r);
		window_run("window_fault_1t", 1, k, e, none, 930 + r);
		window_run("window_fault_4t", WINDOW_THREADS, k, e, none, 940 + r);
		window_range_run(950 + r);
	}
	printf("# window: refaults 1 thread %lu, 4 threads %lu\n", refaults[0], refaults[1]);
	for (j = 0; j < WINDOW_THREADS; j++) {
		munmap(out[j], HUGE);
		free(e[j]);
		free(k[j]);
	}
}

#define CORE_BENCH	"/sys/kernel/debug/hmm_rs/core_bench"

/* Has hmm_rs time its fault and snapshot against the bare walk here. */
static int core_floor(void)
{
	char *buf = map(size, 0), cmd[64], report[2048];
	int fd = open(CORE_BENCH, O_RDWR);
	ssize_t n;

	if (fd < 0) {
		perror(CORE_BENCH);
		return 2;
	}
	fill(buf, size, 9);
	snprintf(cmd, sizeof(cmd), "%#lx %lu", (unsigned long)buf, size);
	if (write(fd, cmd, strlen(cmd)) < 0) {
		perror("core_bench");
		return 1;
	}
	n = pread(fd, report, sizeof(report) - 1, 0);
	if (n < 0) {
		perror("core_bench");
		return 1;
	}
	report[n] = 0;
	fputs(report, stdout);
	close(fd);
	munmap(buf, size);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(struct result *r)
{
	double s[MAX_RUNS];

	memcpy(s, r->ns, r->n * sizeof(s[0]));
	qsort(s, r->n, sizeof(s[0]), cmp_double);
	return r->n % 2 ? s[r->n / 2] : (s[r->n / 2 - 1] + s[r->n / 2]) / 2;
}

static double minimum(struct result *r)
{
	double m = r->ns[0];
	unsigned int i;

	for (i = 1; i < r->n; i++)
		m = r->ns[i] < m ? r->ns[i] : m;
	return m;
}

/*
 * What a run printed: "R name median min" (ns per page, with "placed P of
 * T" and "moves M of N" if the row has them) and "D name ratio" (a ratio
 * of two of its own workloads, stored with n = 0).
 */
static unsigned int load(const char *path, struct result *out, double *med)
{
	char line[512], name[64];
	unsigned int n = 0;
	FILE *f = fopen(path, "r");

	if (!f) {
		perror(path);
		exit(2);
	}
	while (n < MAX_RESULTS && fgets(line, sizeof(line), f)) {
		const char *p;
		double m, lo;

		if (sscanf(line, "R %63s %lf %lf", name, &m, &lo) == 3) {
			out[n].n = 1;
		} else if (sscanf(line, "D %63s %lf", name, &m) == 2) {
			out[n].n = 0;
			lo = m;
		} else {
			continue;
		}
		out[n].name = strdup(name);
		out[n].ns[0] = lo;
		out[n].placed = 0;
		out[n].total = 0;
		out[n].moves = 0;
		out[n].tries = 0;
		p = strstr(line, "; placed ");
		if (p && sscanf(p, "; placed %llu of %llu", &out[n].placed, &out[n].total) != 2)
			out[n].total = 0;
		p = strstr(line, "; moves ");
		if (p && sscanf(p, "; moves %llu of %llu", &out[n].moves, &out[n].tries) != 2)
			out[n].tries = 0;
		med[n++] = m;
	}
	fclose(f);
	return n;
}

static int find(const struct result *r, unsigned int n, const char *name)
{
	unsigned int i;

	for (i = 0; i < n; i++)
		if (!strcmp(r[i].name, name))
			return i;
	return -1;
}

/* "P of T (x%)", or "-" for a row without such a count. */
static void print_count(const struct result *r, int moves)
{
	unsigned long long x = moves ? r->moves : r->placed, of = moves ? r->tries : r->total;

	if (of)
		printf(" %llu of %llu (%.0f%%) |", x, of, 100.0 * x / of);
	else
		printf(" - |");
}

/*
 * The side-by-side table: ns per page, then each driver's own ratios. @la
 * and @lb name the two runs' drivers (the ratio column: @la/@lb), or are
 * NULL: hmm_dummy and test_hmm ("ours/test_hmm").
 */
static int compare(const char *ours, const char *theirs, const char *la, const char *lb)
{
	static struct result a[MAX_RESULTS], b[MAX_RESULTS];
	double ma[MAX_RESULTS], mb[MAX_RESULTS];
	unsigned int na = load(ours, a, ma), nb = load(theirs, b, mb), i;
	int j, batched, counts = 0;
	char ratio[80];

	if (la && lb) {
		snprintf(ratio, sizeof(ratio), "%s/%s", la, lb);
	} else {
		la = "hmm_dummy";
		lb = "test_hmm";
		snprintf(ratio, sizeof(ratio), "ours/test_hmm");
	}
	printf("| workload | %s median | min | %s median | min | %s |\n", la, lb, ratio);
	printf("| --- | ---: | ---: | ---: | ---: | ---: |\n");
	for (i = 0; i < na; i++) {
		if (!a[i].n)
			continue;
		j = find(b, nb, a[i].name);
		if (j < 0)
			printf("| %s | %.0f | %.0f | - | - | - |\n", a[i].name, ma[i], a[i].ns[0]);
		else
			printf("| %s | %.0f | %.0f | %.0f | %.0f | %.2f |\n", a[i].name, ma[i],
			       a[i].ns[0], mb[j], b[j].ns[0], ma[i] / mb[j]);
	}
	/* What only the second run has (rows the first left out, as -u does). */
	for (i = 0; i < nb; i++)
		if (b[i].n && find(a, na, b[i].name) < 0)
			printf("| %s | - | - | %.0f | %.0f | - |\n", b[i].name, mb[i], b[i].ns[0]);
	/* Batched faults on hmm_dummy against test_hmm.ko's one READ per page. */
	j = find(b, nb, "scatter_read");
	batched = find(a, na, "scatter_batch256");
	if (batched >= 0 && j >= 0)
		printf("| scatter_batch256 / %s's scatter_read | | | | | %.2f |\n", lb,
		       ma[batched] / mb[j]);
	batched = find(a, na, "scatter_fault256");
	if (batched >= 0 && j >= 0)
		printf("| scatter_fault256 / %s's scatter_read | | | | | %.2f |\n", lb,
		       ma[batched] / mb[j]);
	/* Pages placed (oversub) and blocks moved (pingpong), summed over the runs. */
	for (i = 0; i < na; i++) {
		int moves;

		if (!a[i].n || !(a[i].total || a[i].tries))
			continue;
		if (!counts++)
			printf("\n| workload: pages placed, alternations moved | %s | %s |\n"
			       "| --- | ---: | ---: |\n", la, lb);
		moves = !a[i].total;
		j = find(b, nb, a[i].name);
		printf("| %s %s |", a[i].name, moves ? "moves" : "placed");
		print_count(&a[i], moves);
		if (j < 0) {
			printf(" - |\n");
		} else {
			print_count(&b[j], moves);
			printf("\n");
		}
	}
	printf("\n| ratio of medians | %s | %s |\n| --- | ---: | ---: |\n", la, lb);
	for (i = 0; i < na; i++) {
		if (a[i].n)
			continue;
		j = find(b, nb, a[i].name);
		printf("| %s | %.2f | ", a[i].name, ma[i]);
		if (j < 0)
			printf("- |\n");
		else
			printf("%.2f |\n", mb[j]);
	}
	return 0;
}

/* The ratios that describe one driver by itself, to @out. */
static void derived(FILE *out)
{
	static const char *const pairs[][3] = {
		{ "thp_speedup_to_dev", "migrate_to_dev", "migrate_to_dev_thp" },
		{ "thp_speedup_to_sys", "migrate_to_sys", "migrate_to_sys_thp" },
		{ "thp_speedup_round_trip", "round_trip", "round_trip_thp" },
		{ "noise_cost_read_cold", "read_cold_noise", "read_cold" },
		{ "scatter_batch256_vs_read", "scatter_batch256", "scatter_read" },
		{ "scatter_batch256_vs_batch1", "scatter_batch256", "scatter_batch1" },
		{ "scatter_batch1_vs_read", "scatter_batch1", "scatter_read" },
		{ "scatter_fault256_vs_fault", "scatter_fault256", "scatter_fault" },
		{ "window_batch_4t_vs_1t", "window_batch_4t", "window_batch_1t" },
		{ "window_fault_4t_vs_1t", "window_fault_4t", "window_fault_1t" },
		{ "window_fault_1t_vs_range", "window_fault_1t", "window_range_1t" },
		{ "oversub_2x_vs_half", "oversub_2x", "oversub_half" },
		{ "oversub_4x_vs_half", "oversub_4x", "oversub_half" },
		{ "pingpong_thrash_vs_nothrash", "pingpong_thrash", "pingpong_nothrash" },
		{ "prefer_fault_vs_fault_migrate", "prefer_fault", "fault_migrate" },
	};
	struct result *on, *off;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(pairs); i++) {
		struct result *a = result(pairs[i][1]), *b = result(pairs[i][2]);

		if (a->n && b->n)
			fprintf(out, "D %s %.2f\n", pairs[i][0], median(a) / median(b));
	}
	/* How many more times the block moved without thrash control (per alternation). */
	off = result("pingpong_nothrash");
	on = result("pingpong_thrash");
	if (off->tries && on->tries && on->moves)
		fprintf(out, "D pingpong_moves_nothrash_vs_thrash %.2f\n",
			((double)off->moves / off->tries) / ((double)on->moves / on->tries));
}

#define SLOW_LATENCY_US	200

static int set_latency(int fd, unsigned int us, int two_pass)
{
	struct hmm_dummy_latency l = { .latency_us = us, .two_pass = two_pass };

	return ioctl(fd, HMM_DUMMY_SET_LATENCY, &l) ? errno : 0;
}

/*
 * munmap of @bytes that @k devices mirror, each taking SLOW_LATENCY_US to
 * stop using memory, in one pass or two (hmm_dummy only): the median of
 * the runs, in microseconds per munmap.
 */
static double slow_munmap(unsigned long bytes, unsigned int k, int two_pass)
{
	static const char *const nodes[] = {
		"/dev/hmm_dmirror0", "/dev/hmm_dmirror1", "/dev/hmm_dmirror2", "/dev/hmm_dmirror3",
	};
	struct result r = { .name = "slow" };
	char *out = map(bytes, 0);
	int fd[4];
	unsigned int run, j;

	for (run = 0; run < runs; run++) {
		char *buf = map(bytes, 0);
		unsigned long long t0, t1;

		fill(buf, bytes, 700 + run);
		for (j = 0; j < k; j++) {
			fd[j] = open(nodes[j], O_RDWR);
			if (fd[j] < 0) {
				perror(nodes[j]);
				exit(2);
			}
			check_ok("slow devices", "READ",
				 dmirror(fd[j], HMM_DMIRROR_READ, buf, out, bytes, NULL));
		}
		for (j = 0; j < k; j++)
			check_ok("slow devices", "HMM_DUMMY_SET_LATENCY",
				 set_latency(fd[j], SLOW_LATENCY_US, two_pass));
		t0 = now_ns();
		check_ok("slow devices", "munmap", munmap(buf, bytes) ? errno : 0);
		t1 = now_ns();
		r.ns[r.n++] = (t1 - t0) / 1e3;
		for (j = 0; j < k; j++) {
			set_latency(fd[j], 0, 0);
			if (dmirror(fd[j], HMM_DMIRROR_READ, buf, out, PAGE, NULL) != EFAULT)
				fail("slow devices", "a device read after munmap: not EFAULT");
			close(fd[j]);
		}
	}
	munmap(out, bytes);
	return median(&r);
}

/* Whether @k devices are there, with hmm_dummy's latency ioctl (never asked with -u). */
static int have_slow_devices(unsigned int k)
{
	char node[32];
	int fd, ok;

	if (uapi_only)
		return 0;
	snprintf(node, sizeof(node), "/dev/hmm_dmirror%u", k - 1);
	fd = open(node, O_RDWR);
	if (fd < 0)
		return 0;
	ok = !set_latency(fd, 0, 0);
	close(fd);
	return ok;
}

/* The two-pass benchmark: one pass against two, 1, 2 and 4 devices. */
static void slow_devices(void)
{
	unsigned long sizes[2] = { 4 * isize, 2UL << 20 };
	unsigned int s, k;

	if (!have_slow_devices(1)) {
		if (!uapi_only)	/* -u: listed as it starts */
			printf("# slow devices: this driver has no HMM_DUMMY_SET_LATENCY\n");
		return;
	}
	printf("# munmap with devices taking %u us each to stop using memory, median us\n",
	       SLOW_LATENCY_US);
	printf("| range | devices | one pass | two passes | two passes / 1 device |\n");
	printf("| --- | ---: | ---: | ---: | ---: |\n");
	for (s = 0; s < 2; s++) {
		double two1 = 0;

		for (k = 1; k <= 4 && have_slow_devices(k); k *= 2) {
			double one = slow_munmap(sizes[s], k, 0);
			double two = slow_munmap(sizes[s], k, 1);

			two1 = k == 1 ? two : two1;
			printf("| %lu MiB | %u | %.0f | %.0f | %.2f |\n", sizes[s] >> 20, k, one,
			       two, two / two1);
		}
	}
}

/*
 * Whether /dev/hmm_dmirror0 is hmm_dummy's: test_hmm.ko answers every
 * ioctl it does not know with EINVAL (after reading a struct
 * hmm_dmirror_cmd from the argument), so hmm_dummy's own ioctls are not
 * sent to it at all; hmm_dummy answers those it does not know with ENOTTY.
 * With -u, never: nothing is probed.
 */
static int is_dummy(void)
{
	return have_slow_devices(1);
}

/*
 * Every page of the device's memory back to system memory. test_hmm.ko
 * also drops its chunks, and wants a page-aligned range of at least a page
 * (@page; neither driver uses it).
 */
static void release_device(const char *what, int fd, void *page)
{
	check_ok(what, "RELEASE", dmirror(fd, HMM_DMIRROR_RELEASE, page, NULL, PAGE, NULL));
}

/* hmm_dummy's device-memory counters (nothing evicted); the errno. */
static int devmem_counters(int fd, struct hmm_dummy_devmem *d)
{
	memset(d, 0, sizeof(*d));
	return ioctl(fd, HMM_DUMMY_DEVMEM, d) ? errno : 0;
}

/* How many pages of [buf, +bytes) are in this device's memory (a snapshot). */
static unsigned long on_device(const char *what, int fd, void *buf, unsigned long bytes)
{
	unsigned char *perm = malloc(bytes / PAGE);
	unsigned long i, n = 0;
	int err;

	if (!perm) {
		perror("malloc");
		exit(2);
	}
	err = dmirror(fd, HMM_DMIRROR_SNAPSHOT, buf, perm, bytes, NULL);
	check_ok(what, "SNAPSHOT", err);
	for (i = 0; !err && i < bytes / PAGE; i++)
		n += (perm[i] & 0xf0) == HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL;
	free(perm);
	return n;
}

/*
 * The first word of every page of [buf, +bytes), page i of which is page
 * @first + i of memory fill() filled with @seed: -1 (and a FAIL line) at
 * the first that is not.
 */
static int check_first(const char *what, const void *buf, unsigned long bytes, uint32_t seed,
		       unsigned long first)
{
	unsigned long i;

	for (i = 0; i < bytes / PAGE; i++) {
		unsigned long long w = *(const unsigned long long *)((const char *)buf + i * PAGE);

		if (w != ((unsigned long long)seed << 32 | (first + i))) {
			char why[96];

			snprintf(why, sizeof(why), "page %lu holds %#llx, not seed %#x", first + i,
				 w, seed);
			fail(what, why);
			return -1;
		}
	}
	return 0;
}

#define OVERSUB_PASSES	3

/*
 * One oversubscription row: a working set of @num / @den times devmem_mib
 * (rounded up to 2 MiB) of 4 KiB pages (MADV_NOHUGEPAGE, as the migration
 * rows without _thp), filled by the CPU, swept to an emptied device
 * OVERSUB_PASSES times, one MIGRATE_TO_DEV per 2 MiB; the time of those
 * ioctls alone, per page swept. The pages on the device after each step:
 * cmd.cpages (what the device read back, from its memory); after -ENOENT
 * (some pages neither moved nor mirrored: the drivers then do not copy cmd
 * back) a snapshot's count, not timed. After the run the CPU checks the
 * first word of every page (faulting back what is on the device).
 */
static void oversub(const char *name, unsigned int num, unsigned int den)
{
	unsigned long bytes = ((devmem_mib << 20) * num / den + HUGE - 1) & ~(HUGE - 1);
	unsigned long long placed0, total0;
	struct hmm_dummy_devmem d0, d1;
	struct result *res = result(name);
	char *out = map(HUGE, 0);
	int fd0 = open_device(), counters = is_dummy() && !devmem_counters(fd0, &d0);
	unsigned int r, pass;

	placed0 = res->placed;
	total0 = res->total;
	for (r = 0; r < runs; r++) {
		unsigned int seed = 1000 + 100 * num + 10 * den + r;
		unsigned long long t = 0, t0;
		int fd = open_device(), bad = 0, err = 0;
		unsigned long off;
		char *buf;

		release_device(name, fd, out);
		buf = map(bytes, 0);
		fill(buf, bytes, seed);
		for (pass = 0; !err && pass < OVERSUB_PASSES; pass++) {
			for (off = 0; off < bytes; off += HUGE) {
				struct hmm_dmirror_cmd cmd;

				t0 = now_ns();
				err = dmirror(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf + off, out, HUGE,
					      &cmd);
				t += now_ns() - t0;
				res->total += HUGE / PAGE;
				if (err == ENOENT) {
					res->placed += on_device(name, fd, buf + off, HUGE);
					err = 0;
					continue;
				}
				if (err) {
					check_ok(name, "MIGRATE_TO_DEV", err);
					break;
				}
				res->placed += cmd.cpages;
				res->faults += cmd.faults;
				if (!bad)
					bad = check_first(name, out, HUGE, seed, off / PAGE);
			}
		}
		if (!err)
			record_ns(name, t, OVERSUB_PASSES * (bytes / PAGE));
		check_first(name, buf, bytes, seed, 0);
		munmap(buf, bytes);
		close(fd);
	}
	fprintf(stdout,
		"# %s: %lu MiB swept %u times in 2 MiB steps, device memory %lu MiB: placed %llu of %llu pages\n",
		name, bytes >> 20, OVERSUB_PASSES, devmem_mib,
		res->placed - placed0, res->total - total0);
	if (counters && !devmem_counters(fd0, &d1))
		fprintf(stdout,
			"# %s: hmm_dummy's device memory: %llu of %llu pages in use; pages migrated %llu, evicted %llu, not_placed %llu; evict_skipped %llu blocks\n",
			name, (unsigned long long)d1.in_use, (unsigned long long)d1.size,
			(unsigned long long)(d1.migrated - d0.migrated),
			(unsigned long long)(d1.evicted - d0.evicted),
			(unsigned long long)(d1.not_placed - d0.not_placed),
			(unsigned long long)(d1.evict_skipped - d0.evict_skipped));
	close(fd0);
	munmap(out, HUGE);
}

#define THRASH_WINDOW_US	2000000
#define THRASH_BACKOFF_US	100000

static int set_thrash(int fd, unsigned int window_us, unsigned int backoff_us)
{
	struct hmm_dummy_thrash t = { .window_us = window_us, .backoff_us = backoff_us };

	return ioctl(fd, HMM_DUMMY_SET_THRASH, &t) ? errno : 0;
}

/* What the ping-pong runs of one row saw, beside its result. */
struct pingpong_tally {
	unsigned long long partial;	/* alternations leaving the block split */
	unsigned long long enoent;	/* MIGRATE_TO_DEV's -ENOENT: not all moved */
	unsigned long long held, detected;	/* HMM_DUMMY_DEVMEM thrash deltas */
};

/*
 * One ping-pong run on an emptied device, thrash control on (@thrash) or
 * off: @block (2 MiB, 4 KiB pages, not used before), filled by the CPU,
 * then per alternation a MIGRATE_TO_DEV of it (its data read back
 * checked, first word per page) and a CPU write of the first word of each
 * of its pages. Timed: the migrations and the writes, per page of the
 * block per alternation. Not timed: a snapshot after each migration, which
 * counts the alternation as a move if the whole block is then on the
 * device.
 */
static void pingpong_run(const char *name, int thrash, char *block, char *out, uint32_t seed,
			 struct pingpong_tally *tally)
{
	struct result *res = result(name);
	struct hmm_dummy_devmem d0, d1;
	int fd = open_device(), counters, bad = 0, err = 0;
	unsigned long long t = 0, t0;
	unsigned long i, n;
	unsigned int a;

	release_device(name, fd, block);
	check_ok(name, "HMM_DUMMY_SET_THRASH",
		 set_thrash(fd, thrash ? THRASH_WINDOW_US : 0, thrash ? THRASH_BACKOFF_US : 0));
	fill(block, HUGE, seed);
	counters = !devmem_counters(fd, &d0);
	for (a = 0; a < alternations; a++) {
		struct hmm_dmirror_cmd cmd;

		/* Each page's first word is seed + a: fill(), or the last CPU write. */
		t0 = now_ns();
		err = dmirror(fd, HMM_DMIRROR_MIGRATE_TO_DEV, block, out, HUGE, &cmd);
		t += now_ns() - t0;
		if (err == ENOENT) {
			tally->enoent++;
			err = 0;
		} else if (err) {
			check_ok(name, "MIGRATE_TO_DEV", err);
			break;
		} else if (!bad) {
			bad = check_first(name, out, HUGE, seed + a, 0);
		}
		n = on_device(name, fd, block, HUGE);
		res->moves += n == HUGE / PAGE;
		tally->partial += n && n < HUGE / PAGE;
		res->tries++;
		t0 = now_ns();
		for (i = 0; i < HUGE / PAGE; i++)
			*(unsigned long long *)(block + i * PAGE) =
				(unsigned long long)(seed + a + 1) << 32 | i;
		t += now_ns() - t0;
	}
	if (!err)
		record_ns(name, t, (unsigned long)a * (HUGE / PAGE));
	check_first(name, block, HUGE, seed + a, 0);
	if (counters && !devmem_counters(fd, &d1)) {
		tally->held += d1.thrash_held - d0.thrash_held;
		tally->detected += d1.thrash_detected - d0.thrash_detected;
	}
	check_ok(name, "HMM_DUMMY_SET_THRASH", set_thrash(fd, 0, 0));
	close(fd);
}

/*
 * A 2 MiB block bouncing between the device and the CPU (hmm_dummy only),
 * without thrash control (pingpong_nothrash), then with it
 * (pingpong_thrash: window THRASH_WINDOW_US, backoff THRASH_BACKOFF_US),
 * alternately, each run on a block of its own: one mapping of all the
 * blocks, so that no run gets the address of an earlier one (and whatever
 * the device remembers of it).
 */
static void pingpong(void)
{
	static const char *const names[2] = { "pingpong_nothrash", "pingpong_thrash" };
	struct pingpong_tally tally[2];
	char *blocks, *out;
	unsigned int r, v;
	int fd, err;

	if (uapi_only)	/* listed as it starts */
		return;
	if (!is_dummy()) {
		printf("# %s: skipped: not hmm_dummy (no HMM_DUMMY_SET_THRASH)\n", __func__);
		return;
	}
	fd = open_device();
	err = set_thrash(fd, 0, 0);
	close(fd);
	if (err == ENOTTY) {
		printf("# %s: skipped: this hmm_dummy has no HMM_DUMMY_SET_THRASH\n", __func__);
		return;
	}
	if (err) {
		check_ok("pingpong", "HMM_DUMMY_SET_THRASH", err);
		return;
	}
	fprintf(stdout,
		"# %s: one 2 MiB block, %u alternations of MIGRATE_TO_DEV and a CPU write of a word per page; thrash control: window %u us, backoff %u us\n",
		__func__, alternations, THRASH_WINDOW_US, THRASH_BACKOFF_US);
	memset(tally, 0, sizeof(tally));
	blocks = map(2 * runs * HUGE, 0);
	out = map(HUGE, 0);
	for (r = 0; r < runs; r++) {
		for (v = 0; v < 2; v++) {
			char *block = blocks + (2 * r + v) * HUGE;

			if (!want(names[v]))
				continue;
			pingpong_run(names[v], v, block, out, 10000 + 1000 * (2 * r + v),
				     &tally[v]);
			munmap(block, HUGE);
		}
	}
	for (v = 0; v < 2; v++) {
		struct result *res = result(names[v]);

		if (!want(names[v]))
			continue;
		printf("# %s: the block moved in %llu of %llu alternations (split after %llu; "
		       "MIGRATE_TO_DEV -ENOENT %llu); thrash_held %llu pages, thrash_detected %llu\n",
		       names[v], res->moves, res->tries, tally[v].partial, tally[v].enoent,
		       tally[v].held, tally[v].detected);
	}
	munmap(blocks, 2 * runs * HUGE);
	munmap(out, HUGE);
}

static int advise(int fd, void *addr, unsigned long bytes, unsigned int flags)
{
	struct hmm_dummy_advice a = {
		.addr = (uintptr_t)addr, .npages = bytes / PAGE, .flags = flags,
	};

	return ioctl(fd, HMM_DUMMY_ADVISE, &a) ? errno : 0;
}

/*
 * prefer_fault: a new mirror of fresh memory filled by the CPU, advised
 * HMM_DUMMY_ADVICE_PREFER_DEVICE (not timed), then one timed READ of all
 * of it, whose fault migrates it first. Returns 0 if the driver has no
 * HMM_DUMMY_ADVISE (or the advice failed), so that no more runs are made.
 */
static int prefer_run(char *out, uint32_t seed)
{
	char *buf = map(msize, 0);
	struct hmm_dmirror_cmd cmd;
	int fd = open_device(), err;
	unsigned long long t0;

	fill(buf, msize, seed);
	memset(out, 0, msize);
	err = advise(fd, buf, msize, HMM_DUMMY_ADVICE_PREFER_DEVICE);
	if (err == ENOTTY)
		printf("# prefer_fault: skipped: this hmm_dummy has no HMM_DUMMY_ADVISE\n");
	else
		check_ok("prefer_fault", "HMM_DUMMY_ADVISE", err);
	if (!err) {
		t0 = now_ns();
		check_ok("prefer_fault", "READ",
			 dmirror(fd, HMM_DMIRROR_READ, buf, out, msize, &cmd));
		record("prefer_fault", t0, now_ns(), msize);
		check("prefer_fault", out, msize, seed);
		check_pages("prefer_fault", &cmd);
		check_where("prefer_fault", fd, buf, msize, 1);
	}
	close(fd);
	munmap(buf, msize);
	return !err;
}

/* fault_migrate: the same, migrated by MIGRATE_TO_DEV then READ, both timed. */
static void fault_migrate_run(char *out, uint32_t seed)
{
	char *buf = map(msize, 0);
	struct hmm_dmirror_cmd cmd;
	int fd = open_device();
	unsigned long long t0, t1;

	fill(buf, msize, seed);
	memset(out, 0, msize);
	t0 = now_ns();
	check_ok("fault_migrate", "MIGRATE_TO_DEV",
		 dmirror(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, out, msize, NULL));
	check_ok("fault_migrate", "READ", dmirror(fd, HMM_DMIRROR_READ, buf, out, msize, &cmd));
	t1 = now_ns();
	record("fault_migrate", t0, t1, msize);
	check("fault_migrate", out, msize, seed);
	check_pages("fault_migrate", &cmd);
	check_where("fault_migrate", fd, buf, msize, 1);
	close(fd);
	munmap(buf, msize);
}

/*
 * Memory advised to the device, migrated by the device's first fault
 * (prefer_fault, hmm_dummy only), against an explicit migration before
 * the access (fault_migrate, both drivers): the migration rows' size.
 */
static void prefer_vs_migrate(void)
{
	int prefer = want("prefer_fault"), migrate = want("fault_migrate");
	char *out = scratch(msize);
	unsigned int r;

	if (prefer && !is_dummy()) {
		if (!uapi_only)	/* -u: listed as it starts */
			printf("# prefer_fault: skipped: not hmm_dummy (no HMM_DUMMY_ADVISE)\n");
		prefer = 0;
	}
	for (r = 0; r < runs; r++) {
		if (prefer)
			prefer = prefer_run(out, 1100 + r);
		if (migrate)
			fault_migrate_run(out, 1200 + r);
	}
}

/*
 * The oversubscription rows (those -o names): only with -m or with
 * hmm_dummy loaded with devmem_mib <= 64 (else 4 x 512 MiB, too much for
 * the VM), even when -o names them.
 */
static void oversubscription(void)
{
	static const struct {
		const char *name;
		unsigned int num, den;
	} rows[] = {
		{ "oversub_half", 1, 2 }, { "oversub_2x", 2, 1 }, { "oversub_4x", 4, 1 },
	};
	int any = 0, param = !strcmp(devmem_from, DEVMEM_MIB_PARAM);
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(rows); i++)
		any |= want(rows[i].name);
	if (!any)
		return;
	if (!devmem_given && !(param && devmem_mib <= 64)) {
		if (!noted)
			fprintf(stdout,
				"# oversub: not run (device memory %lu MiB, from %s): -m MIB runs them\n",
				devmem_mib, devmem_from);
		return;
	}
	printf("# oversub: device memory %lu MiB (from %s), working sets 0.5, 2 and 4 times it\n",
	       devmem_mib, devmem_from);
	for (i = 0; i < ARRAY_SIZE(rows); i++)
		if (want(rows[i].name))
			oversub(rows[i].name, rows[i].num, rows[i].den);
}

/* Every workload -o selects, each run @runs times, into the current table. */
static void run_workloads(void)
{
	unsigned int i;

	if (want("read_cold"))
		read_cold("read_cold", 0);
	if (want("read_warm") || want("write_warm"))
		warm();
	if (want("write_cold"))
		write_cold();
	if (want("read_thp"))
		read_cold("read_thp", 1);
	if (want("snapshot"))
		snapshot();
	for (i = 1; i <= MAX_MIRRORS; i *= 2) {
		if (want("munmap"))
			invalidate(MUNMAP, i);
		if (want("dontneed"))
			invalidate(DONTNEED, i);
		if (want("mprotect"))
			invalidate(MPROTECT, i);
	}
	if (want("migrate_to"))
		migrate_fresh(0);
	if (want("round_trip"))
		round_trips(0);
	if (want("migrate_to"))
		migrate_fresh(1);
	if (want("round_trip"))
		round_trips(1);
	if (want("two_threads"))
		two_threads();
	if (want("read_cold_noise") || (want("read_cold") && *only))
		read_noise();
	if (want("scatter"))
		scattered_reads();
	if (want("window_batch_1t") || want("window_batch_4t") || want("window_fault_1t") ||
	    want("window_fault_4t"))
		window_batches();
	oversubscription();
	if (want("pingpong_nothrash") || want("pingpong_thrash"))
		pingpong();
	if (want("prefer_fault") || want("fault_migrate"))
		prefer_vs_migrate();
	if (want("slow"))
		slow_devices();
}

/* The current table's "R" lines (and derived()'s "D" lines), to @out. */
static void print_results(FILE *out)
{
	unsigned int i;

	for (i = 0; i < table->n; i++) {
		struct result *r = &table->r[i];
		unsigned int k;

		if (!r->n)
			continue;
		fprintf(out, "R %s %.1f %.1f (device faults per run: %.1f", r->name, median(r),
			minimum(r), (double)r->faults / r->n);
		if (r->total)
			fprintf(out, "; placed %llu of %llu", r->placed, r->total);
		if (r->tries)
			fprintf(out, "; moves %llu of %llu", r->moves, r->tries);
		fprintf(out, "; runs:");
		for (k = 0; k < r->n; k++)
			fprintf(out, " %.0f", r->ns[k]);
		fprintf(out, ")\n");
	}
	derived(out);
}

/*
 * -x's number: per row, the ratio of each run of side A to the run of side
 * B next to it in time (run r of each), then the median of those ratios,
 * which the boot's slower and faster phases cancel out of; and the middle
 * half of them (the 25th to the 75th percentile), how far one run's ratio
 * strays.
 */
static void run_ratios(const char *la, const char *lb)
{
	unsigned int i, k;

	printf("\n| workload | %s/%s per run, in turn | median | middle half |\n", la, lb);
	printf("| --- | --- | ---: | ---: |\n");
	for (i = 0; i < tables[0].n; i++) {
		struct result *a = &tables[0].r[i], q = { .name = a->name };
		int j = find(tables[1].r, tables[1].n, a->name);
		struct result *b = j < 0 ? NULL : &tables[1].r[j];

		if (!a->n || !b || !b->n)
			continue;
		printf("| %s |", a->name);
		for (k = 0; k < a->n && k < b->n; k++) {
			q.ns[q.n++] = a->ns[k] / b->ns[k];
			printf(" %.2f", q.ns[k]);
		}
		qsort(q.ns, q.n, sizeof(q.ns[0]), cmp_double);
		printf(" | %.2f | %.2f - %.2f |\n", median(&q), q.ns[q.n / 4], q.ns[3 * q.n / 4]);
	}
}

/* What -u leaves out, said once, as @label's run starts. */
static void left_out(const char *label)
{
	printf("# %s: dmirror uapi only (-u): no HMM_DUMMY_* ioctl sent; left out:", label);
	printf(" scatter_batch*, scatter_fault*, window_*, pingpong_*, prefer_fault,");
	printf(" slow devices, hmm_dummy's device-memory counters\n");
}

/*
 * -x NA,NB LABEL_A FILE_A LABEL_B FILE_B: the workloads of the dmirror
 * uapi (as -u) against two drivers loaded side by side, A on
 * /dev/hmm_dmirrorNA and B on /dev/hmm_dmirrorNB (rust_dmirror's
 * first_node=4 beside hmm_dummy), run by run in turn: run r of every
 * workload on A then on B, run r + 1 on B then on A. Under TCG a whole run
 * of one driver and one of the other, minutes apart, may differ by more
 * (medians up to 1.5 times, in the same boot) than the drivers do; runs
 * one pass of the workloads apart (seconds in bench-short) share the
 * boot's phase far more. The workloads' notes come once. Without -m (the
 * oversubscription rows, whose failed runs record nothing, would pair the
 * two sides' runs wrongly). Each side's "R" and "D" lines go
 * to its file (what a run prints: -c reads them), then come the side's
 * table and the side-by-side one (ratio A/B).
 */
static int interleave(const char *nodes, int argc, char **argv)
{
	unsigned int node[2], total = runs, r, k;
	char extra;
	FILE *f;

	if (argc != 4 || sscanf(nodes, "%u,%u%c", &node[0], &node[1], &extra) != 2 ||
	    node[0] > 7 || node[1] > 7 || node[0] == node[1]) {
		fprintf(stderr, "-x NA,NB LABEL_A FILE_A LABEL_B FILE_B: two nodes, 0 to 7\n");
		return 2;
	}
	if (devmem_given) {
		fprintf(stderr, "-x: no -m\n");
		return 2;
	}
	uapi_only = 1;
	runs = 1;
	fprintf(stdout,
		"# %s (/dev/hmm_dmirror%u) and %s (/dev/hmm_dmirror%u) run by run in turn: %u runs each, %lu MiB (migrations %lu, invalidations %lu), ns per 4 KiB page, dmirror uapi only\n",
		argv[0], node[0], argv[2], node[1], total, size >> 20, msize >> 20, isize >> 20);
	left_out(argv[0]);
	left_out(argv[2]);
	for (r = 0; r < total; r++) {
		for (k = 0; k < 2; k++) {
			unsigned int side = r % 2 ? 1 - k : k;

			table = &tables[side];
			snprintf(device, sizeof(device), "/dev/hmm_dmirror%u", node[side]);
			run_workloads();
		}
		noted = 1;
	}
	for (k = 0; k < 2; k++) {
		table = &tables[k];
		f = fopen(argv[2 * k + 1], "w");
		if (!f) {
			perror(argv[2 * k + 1]);
			return 2;
		}
		fprintf(f, "# %s: %u runs, in turn with %s\n", argv[2 * k], total, argv[2 - 2 * k]);
		print_results(f);
		fclose(f);
		printf("# %s:\n", argv[2 * k]);
		print_results(stdout);
	}
	compare(argv[1], argv[3], argv[0], argv[2]);
	run_ratios(argv[0], argv[2]);
	printf("# %s and %s: %d failure(s)\n", argv[0], argv[2], failures);
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *nodes = NULL;
	unsigned long mib;
	char *end;
	FILE *f;
	int opt;

	while ((opt = getopt(argc, argv, "sn:cko:m:ux:")) != -1) {
		switch (opt) {
		case 's':
			runs = 3;
			size = 8UL << 20;
			msize = 4UL << 20;
			isize = 4UL << 20;
			alternations = 40;
			break;
		case 'm':
			devmem_mib = strtoul(optarg, &end, 10);
			if (*end || devmem_mib < 1 || devmem_mib > (1UL << 20)) {
				fprintf(stderr, "-m: the device memory in MiB, 1 to %lu\n",
					1UL << 20);
				return 2;
			}
			devmem_from = "-m";
			devmem_given = 1;
			break;
		case 'n':
			runs = atoi(optarg);
			if (runs < 1 || runs > MAX_RUNS) {
				fprintf(stderr, "-n: 1 to %d runs\n", MAX_RUNS);
				return 2;
			}
			break;
		case 'c':
			if (argc - optind == 2)
				return compare(argv[optind], argv[optind + 1], NULL, NULL);
			if (argc - optind == 4)
				return compare(argv[optind], argv[optind + 1], argv[optind + 2],
					       argv[optind + 3]);
			goto usage;
		case 'k':
			return core_floor();
		case 'o':
			only = optarg;
			break;
		case 'u':
			uapi_only = 1;
			break;
		case 'x':
			nodes = optarg;
			break;
		default:
			goto usage;
		}
	}
	if (nodes)
		return interleave(nodes, argc - optind, argv + optind);
	if (argc - optind != 1)
		goto usage;
	/* rust_dmirror speaks the dmirror uapi only. */
	if (!strcmp(argv[optind], "rust_dmirror"))
		uapi_only = 1;
	f = devmem_given ? NULL : fopen(DEVMEM_MIB_PARAM, "r");
	if (f) {
		if (fscanf(f, "%lu", &mib) == 1 && mib >= 1 && mib <= (1UL << 20)) {
			devmem_mib = mib;
			devmem_from = DEVMEM_MIB_PARAM;
		}
		fclose(f);
	}
	printf("# %s: %u runs, %lu MiB (migrations %lu, invalidations %lu), ns per 4 KiB page\n",
	       argv[optind], runs, size >> 20, msize >> 20, isize >> 20);
	if (uapi_only)
		left_out(argv[optind]);
	run_workloads();
	print_results(stdout);
	printf("# %s: %d failure(s)\n", argv[optind], failures);
	return failures ? 1 : 0;
usage:
	fprintf(stderr,
		"usage: %s [-s] [-n RUNS] [-m MIB] [-o WORKLOAD] [-u] LABEL\n"
		"       %s [-s] [-n RUNS] [-o WORKLOAD] -x NA,NB LABEL_A FILE_A LABEL_B FILE_B\n"
		"       %s -c OURS THEIRS [OURS_LABEL THEIRS_LABEL]\n"
		"       %s [-s] -k\n",
		argv[0], argv[0], argv[0], argv[0]);
	return 2;
}
