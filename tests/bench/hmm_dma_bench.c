// SPDX-License-Identifier: GPL-2.0
/*
 * What DMA-mapping a mirror costs: a device fault (HMM_DUMMY_FAULT) of a
 * region and its munmap, per 4 KiB page, for 4 KiB pages and for THP, on a
 * mirror the core maps for DMA (hmm_dummy edu=1) and on a plain one
 * (edu=0), in the same boot. Run once per kind of mirror:
 *
 *   hmm_dma_bench [-s] plain|dma|iova > FILE   measure, one line per result
 *   hmm_dma_bench -c PLAIN DMA [IOVA]          the side-by-side table
 *
 * dma: hmm_rs dma_iova=N, each 4 KiB page mapped alone (dma_map_page());
 * iova: dma_iova=Y behind an IOMMU, the pages of each 2 MiB block linked
 * into one IOVA range (the caller sets the parameter).
 *
 * -s: small (8 MiB, 3 runs) instead of 64 MiB, 5 runs, after one run not
 * counted. Each run of a DMA-mapped mirror checks that the fault mapped
 * every page, for THP that each page is in a 2 MiB mapping, and for iova
 * that each 2 MiB block's pages are at consecutive addresses (linked).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../hmm_dummy_uapi.h"

#define PAGE	4096UL
#define HUGE	(2UL << 20)
#define MAXRUNS	5

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof(*v), cmp);
	return v[n / 2];
}

/* One run: ns per page of the fault and of the munmap. */
static int run(int fd, size_t size, int thp, int check_dma, int linked, double *fault,
	       double *unmap)
{
	struct hmm_dummy_range r = { .npages = size / PAGE };
	__u64 *info = NULL;
	char *raw, *buf;
	double t0;
	size_t i;

	raw = mmap(NULL, size + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return -errno;
	buf = (char *)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
	if (madvise(buf, size, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE))
		return -errno;
	for (i = 0; i < size; i += PAGE)
		buf[i] = 1;
	r.addr = (uintptr_t)buf;
	t0 = now_ns();
	if (ioctl(fd, HMM_DUMMY_FAULT, &r))
		return -errno;
	*fault = (now_ns() - t0) / (size / PAGE);
	if (check_dma) {
		info = calloc(size / PAGE, sizeof(*info));
		r.ptr = (uintptr_t)info;
		if (!info || ioctl(fd, HMM_DUMMY_DMA_INFO, &r))
			return -ENOMEM;
		for (i = 0; i < size / PAGE; i++) {
			if (info[i] == HMM_DUMMY_DMA_NONE ||
			    (info[i] & 0xfff) != (thp ? 9 : 0)) {
				printf("FAIL: page %zu: dma %#llx (%s)\n", i,
				       (unsigned long long)info[i], thp ? "THP" : "4 KiB");
				return -EIO;
			}
			if (linked && !thp && info[i] != info[i & ~511UL] + (i & 511) * PAGE) {
				printf("FAIL: page %zu: dma %#llx, not linked after %#llx\n", i,
				       (unsigned long long)info[i],
				       (unsigned long long)info[i & ~511UL]);
				return -EIO;
			}
		}
		free(info);
	}
	t0 = now_ns();
	munmap(buf, size);
	*unmap = (now_ns() - t0) / (size / PAGE);
	munmap(raw, size + HUGE);
	return 0;
}

static int measure(const char *kind, int small)
{
	size_t size = small ? 8UL << 20 : 64UL << 20;
	int runs = small ? 3 : MAXRUNS, linked = !strcmp(kind, "iova");
	int dma = linked || !strcmp(kind, "dma");
	int fd = open("/dev/hmm_dmirror0", O_RDWR), thp, k, ret;
	double f[MAXRUNS], u[MAXRUNS];

	if (fd < 0) {
		printf("FAIL: /dev/hmm_dmirror0: %s\n", strerror(errno));
		return 1;
	}
	for (thp = 0; thp < 2; thp++) {
		/* One run first, not counted: the IOVA allocator's caches fill. */
		if (run(fd, size, thp, dma, linked, &f[0], &u[0])) {
			printf("FAIL: %s %s warm-up run\n", kind, thp ? "thp" : "4k");
			return 1;
		}
		for (k = 0; k < runs; k++) {
			ret = run(fd, size, thp, dma, linked, &f[k], &u[k]);
			if (ret) {
				printf("FAIL: %s %s run %d: %s\n", kind, thp ? "thp" : "4k", k,
				       strerror(-ret));
				return 1;
			}
			printf("# %s %s run %d: fault %.0f ns/page, munmap %.0f ns/page\n", kind,
			       thp ? "thp" : "4k", k, f[k], u[k]);
		}
		printf("%s %s fault %.1f\n", kind, thp ? "thp" : "4k", median(f, runs));
		printf("%s %s munmap %.1f\n", kind, thp ? "thp" : "4k", median(u, runs));
	}
	close(fd);
	return 0;
}

static double lookup(const char *path, const char *what)
{
	char line[256], key[128];
	double v = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char a[32], b[32], c[32];
		double x;

		if (sscanf(line, "%31s %31s %31s %lf", a, b, c, &x) == 4) {
			snprintf(key, sizeof(key), "%s %s", b, c);
			if (!strcmp(key, what))
				v = x;
		}
	}
	fclose(f);
	return v;
}

static int compare(const char *plain, const char *dma, const char *iova)
{
	static const char *const rows[] = { "4k fault", "thp fault", "4k munmap", "thp munmap" };
	unsigned int i;

	printf("%-12s %12s %12s %12s %10s %10s\n", "ns per page", "plain", "per-page",
	       "IOVA", "per-page/", "IOVA/");
	printf("%-12s %12s %12s %12s %10s %10s\n", "", "", "DMA", "DMA", "plain", "plain");
	for (i = 0; i < 4; i++) {
		double p = lookup(plain, rows[i]), d = lookup(dma, rows[i]);
		double v = iova ? lookup(iova, rows[i]) : -1;

		if (p <= 0 || d <= 0 || (iova && v <= 0)) {
			printf("FAIL: no %s figures\n", rows[i]);
			return 1;
		}
		if (iova)
			printf("%-12s %12.1f %12.1f %12.1f %10.2f %10.2f\n", rows[i], p, d, v,
			       d / p, v / p);
		else
			printf("%-12s %12.1f %12.1f %12s %10.2f %10s\n", rows[i], p, d, "-", d / p,
			       "-");
	}
	printf("DMA-mapping cost per page (DMA-mapped minus plain), 4 KiB / THP:\n");
	for (i = 0; i < 2; i++) {
		double s = lookup(dma, rows[2 * i]) - lookup(plain, rows[2 * i]);
		double h = lookup(dma, rows[2 * i + 1]) - lookup(plain, rows[2 * i + 1]);

		printf("  %-7s %8.1f ns / %8.1f ns: ", i ? "unmap" : "map", s, h);
		if (h >= 1)
			printf("a huge entry's one mapping is %.1fx cheaper\n", s / h);
		else
			printf("a huge entry's costs nothing measurable\n");
		if (iova)
			printf("  %-7s %8.1f ns linked into IOVA ranges (per-page / IOVA: %.1fx)\n",
			       i ? "unmap" : "map",
			       lookup(iova, rows[2 * i]) - lookup(plain, rows[2 * i]),
			       s / (lookup(iova, rows[2 * i]) - lookup(plain, rows[2 * i])));
	}
	if (iova) {
		printf("target: IOVA 4 KiB fault %.2fx plain (<= 2)\n",
		       lookup(iova, "4k fault") / lookup(plain, "4k fault"));
		printf("target: IOVA munmap %.2f us per 4 KiB page (<= 0.35)\n",
		       lookup(iova, "4k munmap") / 1000);
	}
	return 0;
}

int main(int argc, char **argv)
{
	int small = argc > 1 && !strcmp(argv[1], "-s");

	if ((argc == 4 || argc == 5) && !strcmp(argv[1], "-c"))
		return compare(argv[2], argv[3], argc == 5 ? argv[4] : NULL);
	if (argc == 2 + small)
		return measure(argv[1 + small], small);
	fprintf(stderr, "usage: %s [-s] plain|dma|iova | -c PLAIN DMA [IOVA]\n", argv[0]);
	return 2;
}
