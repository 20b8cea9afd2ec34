/*
 * Threads sharing a pool: 6 threads acquire 4 models at random under a
 * budget for two, each checking every byte of every tensor of the model it
 * holds against what was written, while another thread reads the pool's
 * status, totals and metrics. Every acquire must succeed (a thread holds
 * one lease at a time, so memory always comes free), the charges never
 * exceed the budget, and everything ends: each wait is bounded. Run by
 * bindings/c/test.sh under ASan/UBSan/LSan and under ThreadSanitizer.
 *
 * MM_POOL_ROUNDS sets the acquires per thread (default 40).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "common.h"

#define MODELS 4
#define THREADS 6
#define TENSORS 4
#define ELEMS 2048
#define MODEL_BYTES ((uint64_t)TENSORS * ELEMS * sizeof(float))
#define BUDGET (2 * MODEL_BYTES + MODEL_BYTES / 2)
#define WAIT_MS 60000u

static const char *ids[MODELS] = {"m0", "m1", "m2", "m3"};
static mm_pool *pool;
static int rounds = 40;
static atomic_int workers_left;

struct worker {
    pthread_t thread;
    unsigned seed;
    int acquired[MODELS];
};

static void sleep_us(long us) {
    struct timespec ts = {0, us * 1000L};
    nanosleep(&ts, NULL);
}

static void *work(void *arg) {
    struct worker *w = (struct worker *)arg;
    for (int r = 0; r < rounds; r++) {
        int m = (int)(rand_r(&w->seed) % MODELS);
        mm_lease *lease = NULL;
        CHECK_OK(mm_pool_acquire(pool, ids[m], WAIT_MS, &lease));
        uint64_t version = 0;
        CHECK_OK(mm_lease_version(lease, &version));
        CHECK(version >= 1);
        /* Model m was written with seed m + 1. */
        CHECK(mm_test_lease_matches(lease, (unsigned)m + 1, TENSORS, ELEMS));
        if (rand_r(&w->seed) % 4 == 0) sleep_us(500);
        /* Another model, only if it is ready now: never waits. */
        mm_lease *other = NULL;
        int o = (m + 1) % MODELS;
        mm_result rc = mm_pool_try_acquire(pool, ids[o], &other);
        CHECK(rc == MM_RESULT_OK || rc == MM_RESULT_NOT_READY);
        if (rc == MM_RESULT_OK) {
            CHECK(mm_test_lease_matches(other, (unsigned)o + 1, TENSORS, ELEMS));
            mm_lease_release(other);
        }
        mm_lease_release(lease);
        w->acquired[m]++;
    }
    atomic_fetch_sub(&workers_left, 1);
    return NULL;
}

/* Reads the pool while the workers run. */
static void *watch(void *arg) {
    (void)arg;
    char *text = NULL;
    size_t cap = 0;
    while (atomic_load(&workers_left) > 0) {
        mm_pool_totals t;
        CHECK_OK(mm_pool_stats(pool, &t));
        CHECK(t.budget == BUDGET && t.charged <= t.budget && t.models == MODELS);
        for (int m = 0; m < MODELS; m++) {
            mm_pool_model_status s;
            CHECK_OK(mm_pool_status(pool, ids[m], &s));
            CHECK(s.charged_bytes <= BUDGET);
            CHECK(s.last_error == MM_RESULT_OK);
        }
        size_t len = 0;
        mm_result rc = mm_pool_metrics_text(pool, text, cap, &len);
        if (rc == MM_RESULT_BUFFER_TOO_SMALL) {
            free(text);
            cap = len + 256;
            text = (char *)malloc(cap);
            CHECK(text != NULL);
        } else {
            CHECK_OK(rc);
            CHECK(strstr(text, "model_manager_pool_charged_bytes") != NULL);
        }
        sleep_us(1000);
    }
    free(text);
    return NULL;
}

int main(void) {
    char dir[1024], path[1100];
    const char *env = getenv("MM_POOL_ROUNDS");
    if (env) rounds = atoi(env);
    mm_test_tempdir(dir, sizeof dir);
    mm_pool_options options;
    CHECK_OK(mm_pool_options_init(&options));
    options.memory_budget = BUDGET;
    options.concurrent_loads = 2;
    options.drain_timeout_ms = 1000;
    CHECK_OK(mm_pool_new(&options, &pool));
    for (int m = 0; m < MODELS; m++) {
        snprintf(path, sizeof path, "%s/%s", dir, ids[m]);
        mm_test_write_model_seeded(path, TENSORS, ELEMS, 64, (unsigned)m + 1);
        CHECK_OK(mm_pool_add(pool, ids[m], path));
    }

    struct worker workers[THREADS];
    pthread_t watcher;
    atomic_store(&workers_left, THREADS);
    for (int i = 0; i < THREADS; i++) {
        memset(&workers[i], 0, sizeof workers[i]);
        workers[i].seed = 1234u + (unsigned)i * 7919u;
        CHECK(pthread_create(&workers[i].thread, NULL, work, &workers[i]) == 0);
    }
    CHECK(pthread_create(&watcher, NULL, watch, NULL) == 0);
    for (int i = 0; i < THREADS; i++) CHECK(pthread_join(workers[i].thread, NULL) == 0);
    CHECK(pthread_join(watcher, NULL) == 0);

    int total = 0;
    for (int i = 0; i < THREADS; i++)
        for (int m = 0; m < MODELS; m++) total += workers[i].acquired[m];
    CHECK(total == THREADS * rounds);

    mm_pool_totals t;
    CHECK_OK(mm_pool_stats(pool, &t));
    CHECK(t.charged <= BUDGET && t.resident_models <= 2);
    CHECK(t.hits + t.misses >= (uint64_t)total);
    CHECK(t.failures == 0);
    printf("pool_threads.c: %d acquires by %d threads; %llu loads, %llu evictions, %llu hits, "
           "%llu misses\n",
           total, THREADS, (unsigned long long)t.loads, (unsigned long long)t.evictions,
           (unsigned long long)t.hits, (unsigned long long)t.misses);
    CHECK_OK(mm_pool_destroy(pool));
    mm_test_rmtree(dir);
    return 0;
}
