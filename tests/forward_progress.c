// SPDX-License-Identifier: GPL-2.0
/*
 * A device access racing a steady stream of invalidations completes.
 *
 * One thread keeps doing MADV_DONTNEED and a rewrite on one random page of
 * a 64-page buffer, as fast as it can; the test thread reads (or writes)
 * the whole buffer through the device meanwhile. Each access must return 0
 * (a device whose page-table update is slower than the CPU's invalidation
 * rate must still finish: hmm_dummy keeps the pages it already copied, and
 * copies under the mirror's lock as it faults), and each page read must be
 * zeros (dropped, not yet rewritten), its pattern, or both (read while
 * the CPU rewrote it), never another page's bytes. The accesses go on
 * until invalidations raced with their faults some times (the core's
 * "fault races" counter: an invalidation of the range while a fault was in
 * flight) or a time limit passed, and the test fails if none did: a race
 * test that did not race proves nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include <lib/test_hmm_uapi.h>

#define PAGE		4096UL
#define NPAGES		64UL
#define SIZE		(NPAGES * PAGE)
#define MIN_ACCESSES	100
#define MIN_RACED	5
#define LIMIT_S		20.0

static double seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The core's count of invalidations that hit a fault in flight, or -1. */
static long fault_races(void)
{
	FILE *f = fopen("/sys/kernel/debug/hmm_rs/stats", "r");
	char line[512];
	long n = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "faults %*u fault races %ld", &n) == 1)
			break;
	fclose(f);
	return n;
}

static unsigned char pattern(unsigned long page)
{
	return page + 1;
}

struct racer {
	char *buf;
	atomic_int stop;
	atomic_ulong rounds;
};

/* DONTNEED + rewrite of one random page, until told to stop. */
static void *racer(void *arg)
{
	struct racer *r = arg;
	unsigned int seed = 1;

	while (!atomic_load(&r->stop)) {
		unsigned long k = rand_r(&seed) % NPAGES;

		madvise(r->buf + k * PAGE, PAGE, MADV_DONTNEED);
		memset(r->buf + k * PAGE, pattern(k), PAGE);
		atomic_fetch_add(&r->rounds, 1);
	}
	return NULL;
}

FIXTURE(progress)
{
	int fd;
	char *buf;
	char *out;
	struct racer r;
	pthread_t thread;
};

FIXTURE_SETUP(progress)
{
	unsigned long k;

	self->fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_GE(self->fd, 0);
	self->buf = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(self->buf, MAP_FAILED);
	/* 4 KiB pages: one invalidation must not take a 2 MiB entry away. */
	madvise(self->buf, SIZE, MADV_NOHUGEPAGE);
	for (k = 0; k < NPAGES; k++)
		memset(self->buf + k * PAGE, pattern(k), PAGE);
	self->out = malloc(SIZE);
	ASSERT_NE(self->out, NULL);
	self->r.buf = self->buf;
	atomic_init(&self->r.stop, 0);
	atomic_init(&self->r.rounds, 0);
	ASSERT_EQ(pthread_create(&self->thread, NULL, racer, &self->r), 0);
}

FIXTURE_TEARDOWN(progress)
{
	atomic_store(&self->r.stop, 1);
	pthread_join(self->thread, NULL);
	free(self->out);
	munmap(self->buf, SIZE);
	close(self->fd);
}

/* Device accesses of the whole buffer until enough raced; returns how many. */
static unsigned long race(struct __test_metadata *_metadata, int fd, char *buf, char *out,
			  struct racer *r, unsigned long request, unsigned long *raced)
{
	unsigned long n = 0, before, during = 0, faulted = 0;
	double end = seconds() + LIMIT_S;
	long races = fault_races();

	*raced = 0;
	if (races < 0) {
		TH_LOG("no fault races counter in /sys/kernel/debug/hmm_rs/stats");
		return 0;
	}
	while (seconds() < end && (n < MIN_ACCESSES || *raced < MIN_RACED)) {
		struct hmm_dmirror_cmd cmd = {
			.addr = (uintptr_t)buf,
			.ptr = (uintptr_t)out,
			.npages = NPAGES,
		};
		unsigned long k, i;

		if (request == HMM_DMIRROR_WRITE)
			memset(out, 0x5a, SIZE);
		before = atomic_load(&r->rounds);
		EXPECT_EQ(ioctl(fd, request, &cmd), 0) {
			TH_LOG("access %lu: %s", n, strerror(errno));
			break;
		}
		during += atomic_load(&r->rounds) - before;
		EXPECT_EQ(cmd.cpages, NPAGES);
		faulted += cmd.faults > 0;
		*raced = fault_races() - races;
		n++;
		if (request != HMM_DMIRROR_READ)
			continue;
		/*
		 * Zeros, the pattern, or both: the device may copy a page
		 * while the CPU rewrites it. Anything else is another page.
		 */
		for (k = 0; k < NPAGES; k++) {
			for (i = 0; i < PAGE; i++) {
				unsigned char b = out[k * PAGE + i];

				if (b != 0 && b != pattern(k))
					break;
			}
			EXPECT_EQ(i, PAGE) {
				TH_LOG("access %lu, page %lu: byte %lu is 0x%02x, not 0 or 0x%02x",
				       n, k, i, (unsigned char)out[k * PAGE + i], pattern(k));
				return n;
			}
		}
	}
	TH_LOG("%lu accesses, %lu of them faulted; %lu faults raced with invalidations; "
	       "%lu DONTNEEDs while they ran", n, faulted, *raced, during);
	return n;
}

TEST_F_TIMEOUT(progress, device_read_completes_under_dontneed, 120)
{
	unsigned long raced;

	race(_metadata, self->fd, self->buf, self->out, &self->r, HMM_DMIRROR_READ, &raced);
	/* No race seen in LIMIT_S seconds: this run tested nothing. */
	ASSERT_GE(raced, MIN_RACED);
}

TEST_F_TIMEOUT(progress, device_write_completes_under_dontneed, 120)
{
	unsigned long raced;

	race(_metadata, self->fd, self->buf, self->out, &self->r, HMM_DMIRROR_WRITE, &raced);
	ASSERT_GE(raced, MIN_RACED);
}

TEST_HARNESS_MAIN
