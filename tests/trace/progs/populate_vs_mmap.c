/* Two threads, written without mmlab: "populate" maps SIZE_MIB of anonymous memory with
 * MAP_POPULATE once the "victim" thread is under way; "victim" maps and unmaps one page ITERS
 * times. Every run makes the same calls, so tracepoint counts can be compared between runs.
 * usage: populate_vs_mmap [SIZE_MIB=256] [ITERS=3000] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static size_t size;
static long iters;
static atomic_long done;

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *victim(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "victim");
	for (long i = 0; i < iters; i++) {
		void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) { perror("mmap"); exit(1); }
		munmap(p, 4096);
		atomic_store(&done, i + 1);
	}
	return NULL;
}

static void *populate(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "populate");
	while (atomic_load(&done) < iters / 10)
		;
	double t0 = now_ms();
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p == MAP_FAILED) { perror("mmap populate"); exit(1); }
	double t1 = now_ms();
	munmap(p, size);
	printf("populate %zu MiB: %.1f ms\n", size >> 20, t1 - t0);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t a, b;
	size = (size_t)(argc > 1 ? atol(argv[1]) : 256) << 20;
	iters = argc > 2 ? atol(argv[2]) : 3000;
	pthread_create(&a, NULL, victim, NULL);
	pthread_create(&b, NULL, populate, NULL);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	return 0;
}
