/* Three threads, written without mmlab: the main thread maps SIZE_MIB with MAP_POPULATE (a long
 * read hold of mmap_lock) while "writer" maps and unmaps one page (it waits for write) and
 * "reader" calls mincore() on one page (it asks for read). With a fair rwsem the reader queues
 * behind the waiting writer even though only a reader holds the lock.
 * usage: convoy [SIZE_MIB=32] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>

static atomic_int phase;	/* 0 setup, 1 populating, 2 done */
static atomic_int started;
static char *page;

static void *writer(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "writer");
	atomic_fetch_add(&started, 1);
	while (atomic_load(&phase) < 1)
		;
	for (int i = 0; i < 100000 && atomic_load(&phase) < 2; i++) {
		void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		munmap(p, 4096);
	}
	return NULL;
}

static void *reader(void *arg)
{
	unsigned char vec;

	(void)arg;
	pthread_setname_np(pthread_self(), "reader");
	atomic_fetch_add(&started, 1);
	while (atomic_load(&phase) < 1)
		;
	for (int i = 0; i < 1000000 && atomic_load(&phase) < 2; i++)
		mincore(page, 4096, &vec);
	return NULL;
}

int main(int argc, char **argv)
{
	size_t size = (size_t)(argc > 1 ? atol(argv[1]) : 32) << 20;
	pthread_t w, r;

	page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	page[0] = 1;
	pthread_create(&w, NULL, writer, NULL);
	pthread_create(&r, NULL, reader, NULL);
	while (atomic_load(&started) < 2)
		;
	atomic_store(&phase, 1);
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	atomic_store(&phase, 2);
	pthread_join(w, NULL);
	pthread_join(r, NULL);
	return p == MAP_FAILED;
}
