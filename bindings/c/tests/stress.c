/*
 * Many threads at once on one manager, for a bounded time (2 s, or
 * MM_STRESS_SECONDS): readers of state and snapshot, lease holders reading
 * tensor data, loaders switching between two models, and cancellers and
 * unloaders. Checks, while it runs: snapshots' generations never go back on
 * a thread, a lease's data is always one model's, complete and correct,
 * every transition delivered is legal and in order, and every Idle or Failed
 * event carries 0 resident bytes (those states are entered only once the
 * memory is back). At the end: every load callback was called exactly once,
 * and destroy leaves nothing behind.
 *
 * All state shared between threads on the C side is C11 atomics or under a
 * pthread mutex, so ThreadSanitizer and helgrind can see its ordering.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "common.h"

typedef struct {
    mm_manager *manager;
    const char *models[2];
    size_t tensors[2]; /* tensor count of each model */
    size_t elems[2];   /* elements per tensor of each model */
    atomic_bool stop;
    atomic_ulong loads_requested; /* loads accepted with a callback */
    atomic_ulong loads_done;      /* load callbacks called */
    atomic_ulong leases;          /* leases acquired */
    atomic_ulong reads;           /* snapshots read */
    atomic_ulong events;          /* transitions delivered */
    atomic_ulong ready_outcomes;  /* load callbacks with MM_RESULT_OK */
    pthread_mutex_t event_lock;
    mm_state last_to;    /* state entered by the last event seen */
    uint64_t last_gen;   /* its generation */
} shared_t;

#ifdef MM_TSAN_CANARY
/* A race planted on purpose (only in the canary build): written by the event
 * callback on the library's worker thread, read by the reader threads with
 * no synchronisation. The ThreadSanitizer run must report it; otherwise it
 * would be blind to races between callbacks and the host's threads. */
static unsigned long canary;
#endif

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift: a cheap per-thread random number. */
static uint32_t next_random(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static bool legal(mm_state from, mm_state to) {
    switch (from) {
    case MM_STATE_IDLE: return to == MM_STATE_LOADING;
    case MM_STATE_FAILED: return to == MM_STATE_LOADING || to == MM_STATE_IDLE;
    case MM_STATE_LOADING:
        return to == MM_STATE_READY || to == MM_STATE_IDLE || to == MM_STATE_FAILED;
    case MM_STATE_READY: return to == MM_STATE_UNLOADING;
    case MM_STATE_UNLOADING: return to == MM_STATE_IDLE;
    }
    return false;
}

static void on_event(void *userdata, const mm_event *event) {
    shared_t *s = (shared_t *)userdata;
    CHECK(legal(event->from, event->to));
    CHECK(event->snapshot.state == event->to);
    /* Idle and Failed are entered only once the memory is back. */
    if (event->to == MM_STATE_IDLE || event->to == MM_STATE_FAILED)
        CHECK(event->snapshot.resident_bytes == 0);
    pthread_mutex_lock(&s->event_lock);
    if (event->missed == 0 && s->last_gen != 0) {
        CHECK(event->from == s->last_to);
        CHECK(event->snapshot.generation > s->last_gen);
    }
    s->last_to = event->to;
    s->last_gen = event->snapshot.generation;
    pthread_mutex_unlock(&s->event_lock);
#ifdef MM_TSAN_CANARY
    canary++;
#endif
    atomic_fetch_add(&s->events, 1);
}

static void on_done(void *userdata, mm_result result, const mm_snapshot *snapshot) {
    shared_t *s = (shared_t *)userdata;
    (void)snapshot;
    CHECK(result == MM_RESULT_OK || result == MM_RESULT_CANCELLED ||
          result == MM_RESULT_SUPERSEDED || result == MM_RESULT_SHUT_DOWN);
    if (result == MM_RESULT_OK) atomic_fetch_add(&s->ready_outcomes, 1);
    atomic_fetch_add(&s->loads_done, 1);
}

static void *reader(void *arg) {
    shared_t *s = (shared_t *)arg;
    uint64_t last = 0;
    while (!atomic_load(&s->stop)) {
        mm_snapshot snap;
        mm_state state;
        CHECK_OK(mm_manager_snapshot(s->manager, &snap));
        CHECK(snap.generation >= last);
        last = snap.generation;
        CHECK(snap.state <= MM_STATE_FAILED);
        CHECK(snap.progress.bytes_done <= snap.progress.bytes_total);
        CHECK_OK(mm_manager_state(s->manager, &state));
        atomic_fetch_add(&s->reads, 1);
#ifdef MM_TSAN_CANARY
        if (canary == 0xdeadbeef) printf("canary\n");
#endif
    }
    return NULL;
}

static void *leaser(void *arg) {
    shared_t *s = (shared_t *)arg;
    while (!atomic_load(&s->stop)) {
        mm_lease *lease = NULL;
        mm_result rc = mm_manager_acquire(s->manager, &lease);
        if (rc == MM_RESULT_NOT_READY) continue;
        CHECK_OK(rc);
        size_t count = 0;
        CHECK_OK(mm_lease_tensor_count(lease, &count));
        /* Which model is this? Its tensor count says. */
        int which = count == s->tensors[0] ? 0 : 1;
        CHECK(count == s->tensors[which]);
        size_t t = count - 1;
        mm_tensor tensor;
        CHECK_OK(mm_lease_tensor(lease, t, &tensor));
        CHECK(tensor.rank == 1 && tensor.shape[0] == s->elems[which]);
        const float *data = (const float *)tensor.data;
        for (size_t i = 0; i < s->elems[which]; i += 97) {
            CHECK(data[i] == (float)mm_test_value(t, i));
        }
        uint64_t sample = 0;
        mm_result sample_rc = mm_manager_sample_size(s->manager, &sample);
        CHECK(sample_rc == MM_RESULT_OK || sample_rc == MM_RESULT_NOT_READY);
        mm_lease_release(lease);
        atomic_fetch_add(&s->leases, 1);
    }
    return NULL;
}

static void *loader(void *arg) {
    shared_t *s = (shared_t *)arg;
    uint32_t seed = 0x9e3779b9u;
    while (!atomic_load(&s->stop)) {
        int which = (int)(next_random(&seed) % 2);
        mm_result rc = mm_manager_load(s->manager, s->models[which], on_done, s);
        CHECK_OK(rc);
        atomic_fetch_add(&s->loads_requested, 1);
        usleep(next_random(&seed) % 3000);
    }
    return NULL;
}

static void *canceller(void *arg) {
    shared_t *s = (shared_t *)arg;
    uint32_t seed = 0x12345678u;
    while (!atomic_load(&s->stop)) {
        mm_result rc;
        size_t leases = 0;
        switch (next_random(&seed) % 3) {
        case 0:
            rc = mm_manager_cancel(s->manager);
            CHECK(rc == MM_RESULT_OK || rc == MM_RESULT_INVALID_TRANSITION);
            break;
        case 1:
            rc = mm_manager_unload(s->manager);
            CHECK(rc == MM_RESULT_OK || rc == MM_RESULT_INVALID_TRANSITION);
            break;
        default:
            rc = mm_manager_unload_timeout(s->manager, 5, &leases);
            /* TIMEOUT: no lease held, the memory still being freed. */
            CHECK(rc == MM_RESULT_OK || rc == MM_RESULT_INVALID_TRANSITION ||
                  rc == MM_RESULT_LEASES_OUTSTANDING || rc == MM_RESULT_TIMEOUT);
            break;
        }
        usleep(next_random(&seed) % 4000);
    }
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    double seconds = 2.0;
    const char *env = getenv("MM_STRESS_SECONDS");
    if (env != NULL) seconds = atof(env);

    char root[512], a[600], b[600];
    mm_test_tempdir(root, sizeof root);
    snprintf(a, sizeof a, "%s/a", root);
    snprintf(b, sizeof b, "%s/b", root);
    mm_test_write_model(a, 3, 16 * 1024, 32);
    mm_test_write_model(b, 5, 8 * 1024, 64);

    shared_t s;
    memset(&s, 0, sizeof s);
    s.models[0] = a;
    s.models[1] = b;
    s.tensors[0] = 3;
    s.tensors[1] = 5;
    s.elems[0] = 16 * 1024;
    s.elems[1] = 8 * 1024;
    atomic_init(&s.stop, false);
    pthread_mutex_init(&s.event_lock, NULL);

    mm_manager_options options;
    CHECK_OK(mm_manager_options_init(&options));
    options.chunk_size = 16 * 1024;
    options.drain_timeout_ms = 1000;
    CHECK_OK(mm_manager_new(&options, &s.manager));
    mm_subscription *sub = NULL;
    CHECK_OK(mm_manager_subscribe(s.manager, on_event, &s, &sub));

    pthread_t threads[7];
    void *(*roles[7])(void *) = {reader, reader, leaser, leaser, loader, loader, canceller};
    for (int i = 0; i < 7; i++) CHECK(pthread_create(&threads[i], NULL, roles[i], &s) == 0);
    double start = now_seconds();
    while (now_seconds() - start < seconds) usleep(10 * 1000);
    atomic_store(&s.stop, true);
    for (int i = 0; i < 7; i++) CHECK(pthread_join(threads[i], NULL) == 0);

    /* Settle: whatever is in flight ends; a last load must then work. */
    mm_state state;
    mm_result settled = mm_manager_wait(s.manager, 30000, &state);
    if (settled != MM_RESULT_OK) {
        mm_snapshot snap;
        size_t held = 0;
        CHECK_OK(mm_manager_snapshot(s.manager, &snap));
        CHECK_OK(mm_manager_outstanding_leases(s.manager, &held));
        fprintf(stderr, "not settled: %s; state %s, generation %llu, leases %zu, loads %lu/%lu\n",
                mm_result_name(settled), mm_state_name(snap.state),
                (unsigned long long)snap.generation, held, atomic_load(&s.loads_done),
                atomic_load(&s.loads_requested));
    }
    CHECK_OK(settled);
    CHECK_OK(mm_manager_load(s.manager, a, on_done, &s));
    atomic_fetch_add(&s.loads_requested, 1);
    CHECK_OK(mm_manager_wait(s.manager, 30000, &state));
    CHECK(state == MM_STATE_READY);
    size_t leases = 99;
    CHECK_OK(mm_manager_outstanding_leases(s.manager, &leases));
    CHECK(leases == 0);

    CHECK_OK(mm_manager_destroy(s.manager));
    mm_subscription_unsubscribe(sub);
    /* Every load callback exactly once, all before destroy returned. */
    CHECK(atomic_load(&s.loads_done) == atomic_load(&s.loads_requested));
    CHECK(atomic_load(&s.ready_outcomes) >= 1);
    printf("stress: %.1f s, %lu loads (%lu ready), %lu leases, %lu reads, %lu events\n", seconds,
           atomic_load(&s.loads_requested), atomic_load(&s.ready_outcomes),
           atomic_load(&s.leases), atomic_load(&s.reads), atomic_load(&s.events));
    CHECK(atomic_load(&s.leases) > 0 && atomic_load(&s.reads) > 0);
    pthread_mutex_destroy(&s.event_lock);
    mm_test_rmtree(root);
    printf("stress test passed\n");
    return 0;
}
