/*
 * mm_manager_destroy is bounded even when a progress callback blocks: with
 * a drain timeout of 200 ms, destroy (called on another thread while the
 * callback waits for the host) must return within 200 ms + 2 s, with
 * MM_RESULT_TIMEOUT since a callback is still running; the host releases
 * the callback only after that. The callback gives up by itself after 20 s,
 * so the test cannot hang.
 *
 * The load has a load callback too: destroy does not wait for it (the load
 * cannot end while its progress callback blocks); it is called exactly
 * once, with MM_RESULT_CANCELLED and an Idle snapshot holding 0 bytes, once
 * the progress callback has returned and the load has freed what it read.
 *
 * This needs the core's ModelManager::shutdown_blocking to be bounded
 * whatever a progress callback does. MM_SKIP_BOUNDED_DESTROY=1 skips it
 * (bindings/c/test.sh does not set it).
 *
 * Built with -Wall -Wextra -Werror -fsanitize=address,undefined.
 */
#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "common.h"

#define DRAIN_MS 200
#define SLACK_MS 2000
#define CALLBACK_LIMIT_S 20

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled on every change below */
    bool entered;        /* the first progress callback is blocking */
    bool released;       /* the host lets it return */
    bool returned;       /* it has returned */
    bool timed_out;      /* it gave up waiting for the host */
    mm_manager *manager;
    bool destroyed; /* destroy has returned, with: */
    mm_result destroy_rc;
    double destroy_ms;
    bool load_done; /* the load callback was called (load_calls times), with: */
    int load_calls;
    bool load_before_destroy; /* it was called before destroy returned */
    mm_result load_rc;
    mm_state load_state;
    uint64_t load_resident;
} gate;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Wait on g->cond until *flag, up to `seconds`; whether it became true. */
static bool wait_for(gate *g, const bool *flag, int seconds) {
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += seconds;
    pthread_mutex_lock(&g->lock);
    int rc = 0;
    while (!*flag && rc == 0) rc = pthread_cond_timedwait(&g->cond, &g->lock, &deadline);
    bool done = *flag;
    pthread_mutex_unlock(&g->lock);
    return done;
}

static void set(gate *g, bool *flag) {
    pthread_mutex_lock(&g->lock);
    *flag = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

/* On a loader thread: the first call blocks until the host releases it. */
static void on_progress(void *userdata, const mm_progress *progress) {
    gate *g = (gate *)userdata;
    (void)progress;
    pthread_mutex_lock(&g->lock);
    bool first = !g->entered;
    pthread_mutex_unlock(&g->lock);
    if (!first) return;
    set(g, &g->entered);
    if (!wait_for(g, &g->released, CALLBACK_LIMIT_S)) set(g, &g->timed_out);
    set(g, &g->returned);
}

/* On the callbacks' thread, after destroy has returned. */
static void on_done(void *userdata, mm_result result, const mm_snapshot *snapshot) {
    gate *g = (gate *)userdata;
    pthread_mutex_lock(&g->lock);
    g->load_calls++;
    g->load_before_destroy = !g->destroyed;
    g->load_rc = result;
    g->load_state = snapshot->state;
    g->load_resident = snapshot->resident_bytes;
    pthread_mutex_unlock(&g->lock);
    set(g, &g->load_done);
}

static void *destroy_thread(void *arg) {
    gate *g = (gate *)arg;
    double start = now_ms();
    mm_result rc = mm_manager_destroy(g->manager);
    double took = now_ms() - start;
    pthread_mutex_lock(&g->lock);
    g->destroy_rc = rc;
    g->destroy_ms = took;
    pthread_mutex_unlock(&g->lock);
    set(g, &g->destroyed);
    return NULL;
}

int main(void) {
    const char *skip = getenv("MM_SKIP_BOUNDED_DESTROY");
    if (skip != NULL && strcmp(skip, "1") == 0) {
        printf("skipped: bounded destroy (MM_SKIP_BOUNDED_DESTROY=1)\n");
        return 0;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    char root[512], big[600];
    mm_test_tempdir(root, sizeof root);
    snprintf(big, sizeof big, "%s/big", root);
    mm_test_write_model(big, 4, 64 * 1024, 128);

    gate g;
    memset(&g, 0, sizeof g);
    pthread_condattr_t attr;
    CHECK(pthread_condattr_init(&attr) == 0);
    CHECK(pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0);
    CHECK(pthread_mutex_init(&g.lock, NULL) == 0);
    CHECK(pthread_cond_init(&g.cond, &attr) == 0);

    mm_manager_options options;
    CHECK_OK(mm_manager_options_init(&options));
    options.chunk_size = 4096;
    options.drain_timeout_ms = DRAIN_MS;
    options.progress = on_progress;
    options.progress_userdata = &g;
    CHECK_OK(mm_manager_new(&options, &g.manager));
    CHECK_OK(mm_manager_load(g.manager, big, on_done, &g));
    CHECK(wait_for(&g, &g.entered, CALLBACK_LIMIT_S));

    pthread_t destroyer;
    CHECK(pthread_create(&destroyer, NULL, destroy_thread, &g) == 0);
    /* Longer than the callback's own limit: destroy returns by then even
     * with a core that waits for the callback. */
    if (!wait_for(&g, &g.destroyed, CALLBACK_LIMIT_S + 10)) {
        fprintf(stderr, "FAIL: mm_manager_destroy did not return within %d s\n",
                CALLBACK_LIMIT_S + 10);
        _exit(1);
    }
    set(&g, &g.released);
    CHECK(pthread_join(destroyer, NULL) == 0);
    CHECK(wait_for(&g, &g.returned, CALLBACK_LIMIT_S));
    /* The load ends now that its progress callback has returned. */
    CHECK(wait_for(&g, &g.load_done, CALLBACK_LIMIT_S));

    pthread_mutex_lock(&g.lock);
    double took = g.destroy_ms;
    mm_result rc = g.destroy_rc;
    bool timed_out = g.timed_out;
    int load_calls = g.load_calls;
    bool load_before_destroy = g.load_before_destroy;
    mm_result load_rc = g.load_rc;
    mm_state load_state = g.load_state;
    uint64_t load_resident = g.load_resident;
    pthread_mutex_unlock(&g.lock);
    printf("destroy returned %s after %.0f ms (bound %d ms)%s\n", mm_result_name(rc), took,
           DRAIN_MS + SLACK_MS,
           timed_out ? "; the callback gave up waiting for the host" : "");
    /* What destroy leaves behind is freed once the callback has returned;
     * give that thread a moment before LeakSanitizer looks at exit. */
    usleep(500 * 1000);
    mm_test_rmtree(root);
    pthread_cond_destroy(&g.cond);
    pthread_mutex_destroy(&g.lock);
    pthread_condattr_destroy(&attr);

    if (took > DRAIN_MS + SLACK_MS) {
        fprintf(stderr,
                "FAIL: mm_manager_destroy took %.0f ms with a blocked progress callback; "
                "the bound is drain_timeout (%d ms) + %d ms\n",
                took, DRAIN_MS, SLACK_MS);
        return 1;
    }
    /* A callback was still running when it returned. */
    CHECK(rc == MM_RESULT_TIMEOUT);
    CHECK(!timed_out);
    CHECK(load_calls == 1 && !load_before_destroy);
    CHECK(load_rc == MM_RESULT_CANCELLED);
    CHECK(load_state == MM_STATE_IDLE && load_resident == 0);
    printf("ok bounded destroy\n");
    return 0;
}
