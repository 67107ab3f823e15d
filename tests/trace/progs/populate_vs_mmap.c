/* Two threads, written without mmlab: "populate" maps SIZE_MIB of anonymous memory with
 * MAP_POPULATE once the "victim" thread is under way; "victim" maps and unmaps one page ITERS
 * times. Every run makes the same calls, so tracepoint counts can be compared between runs.
 * usage: populate_vs_mmap [SIZE_MIB=256] [ITERS=3000] [gate]
 * With "gate", it reads one byte from stdin before starting (so a tracer can attach first);
 * SIZE_MIB 0 runs the victim alone. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static size_t size;
static long iters;
static atomic_long done;
static atomic_int ready;	/* the populate thread is running: the victim may start */
static atomic_int populating;	/* the populate is about to begin: the victim goes on */

/* Each thread on a CPU of its own when there are two: a populate thread spinning on the CPU
 * the victim runs on would keep the victim off it for the start of the populate. */
static void pin(int nth)
{
	cpu_set_t allowed, one;
	int seen = 0;

	if (sched_getaffinity(0, sizeof(allowed), &allowed) || CPU_COUNT(&allowed) < 2)
		return;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (!CPU_ISSET(cpu, &allowed) || seen++ != nth)
			continue;
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
		return;
	}
}

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
	pin(0);
	while (!atomic_load(&ready))
		;
	for (long i = 0; i < iters; i++) {
		void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) { perror("mmap"); exit(1); }
		munmap(p, 4096);
		atomic_store(&done, i + 1);
		if (i + 1 == iters / 10)	/* still looping when the populate begins */
			while (size && !atomic_load(&populating))
				;
	}
	return NULL;
}

static void *populate(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "populate");
	pin(1);
	atomic_store(&ready, 1);
	while (atomic_load(&done) < iters / 10)
		;
	if (!size)
		return NULL;
	double t0 = now_ms();
	atomic_store(&populating, 1);
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
	if (argc > 3)
		(void)getchar();
	pthread_create(&a, NULL, victim, NULL);
	pthread_create(&b, NULL, populate, NULL);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	return 0;
}
