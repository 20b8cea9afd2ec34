/*
 * The C API end to end, in C11: the lifecycle on models written here,
 * progress, events, cancel in the middle of a load (from the first progress
 * callback, so it is deterministic), switching models, a corrupt file, every
 * NULL argument, a lease held across an unload, and destroy during a load.
 *
 * Built with -Wall -Wextra -Werror -fsanitize=address,undefined, and without
 * sanitizers under valgrind.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "common.h"
#include "null_args.h"

/* ---- Recording callbacks ---------------------------------------------- */

#define MAX_EVENTS 64

typedef struct {
    pthread_mutex_t lock;
    mm_event events[MAX_EVENTS];
    size_t count;
    mm_manager *manager;      /* for the re-entrancy checks */
    mm_result destroy_inside; /* what destroy said inside the callback */
    mm_result wait_inside;    /* what wait said inside the callback */
} event_log;

static void on_event(void *userdata, const mm_event *event) {
    event_log *log = (event_log *)userdata;
    mm_state state;
    /* Blocking functions refuse to run in a callback; reads are fine. */
    mm_result destroy = mm_manager_destroy(log->manager);
    mm_result wait = mm_manager_wait(log->manager, 0, &state);
    CHECK_OK(mm_manager_state(log->manager, &state));
    pthread_mutex_lock(&log->lock);
    if (log->count < MAX_EVENTS) log->events[log->count++] = *event;
    log->destroy_inside = destroy;
    log->wait_inside = wait;
    pthread_mutex_unlock(&log->lock);
}

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t done_cond;
    int calls;
    mm_result result;
    mm_state state;
    char message[512];
} load_outcome;

static void load_outcome_init(load_outcome *o) {
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->done_cond, NULL);
    o->calls = 0;
    o->result = MM_RESULT_PANIC;
    o->state = MM_STATE_IDLE;
    o->message[0] = 0;
}

static void load_outcome_destroy(load_outcome *o) {
    pthread_cond_destroy(&o->done_cond);
    pthread_mutex_destroy(&o->lock);
}

static void load_outcome_reset(load_outcome *o) {
    load_outcome_destroy(o);
    load_outcome_init(o);
}

/* Wait for the load callback (mm_manager_wait already has; taking the lock
 * orders the reads that follow after the callback's writes). */
static void outcome_wait(load_outcome *o) {
    pthread_mutex_lock(&o->lock);
    while (o->calls == 0) pthread_cond_wait(&o->done_cond, &o->lock);
    pthread_mutex_unlock(&o->lock);
}

/* How many times the load callback has run so far (without waiting). */
static int outcome_calls(load_outcome *o) {
    pthread_mutex_lock(&o->lock);
    int calls = o->calls;
    pthread_mutex_unlock(&o->lock);
    return calls;
}

static void on_done(void *userdata, mm_result result, const mm_snapshot *snapshot) {
    load_outcome *o = (load_outcome *)userdata;
    char message[512] = "";
    size_t len = 0;
    if (result != MM_RESULT_OK) {
        /* The load's error, on this (the worker) thread, during the call. */
        CHECK_OK(mm_last_error_message(message, sizeof message, &len));
        CHECK(len == strlen(message));
    }
    pthread_mutex_lock(&o->lock);
    o->calls++;
    o->result = result;
    o->state = snapshot->state;
    memcpy(o->message, message, sizeof message);
    pthread_cond_broadcast(&o->done_cond);
    pthread_mutex_unlock(&o->lock);
}

typedef struct {
    atomic_int calls;
    atomic_ullong max_bytes; /* the most bytes_done seen */
    /* On the first call, when set: cancel the load; */
    _Atomic(mm_manager *) cancel_on_first;
    atomic_int cancel_result;
    /* or hold the load in its first chunk until the host lets it go
     * (`released`) or destroy has begun (commands answer SHUT_DOWN), which
     * makes "cancel/unload/destroy during a load" certain. While held, the
     * state must stay Loading: nothing can publish Idle before this load
     * has freed what it read (`held_not_loading` counts violations); */
    _Atomic(mm_manager *) hold_on_first;
    atomic_bool released;
    atomic_int held_not_loading;
    /* or load another model (latest request wins). */
    _Atomic(mm_manager *) supersede_on_first;
    const char *supersede_path;
    void *supersede_outcome;
    atomic_int supersede_result;
    /* Signalled on the first call. */
    pthread_mutex_t lock;
    pthread_cond_t first_cond;
} progress_log;

static void progress_log_init(progress_log *p) {
    atomic_init(&p->calls, 0);
    atomic_init(&p->max_bytes, 0);
    atomic_init(&p->cancel_on_first, NULL);
    atomic_init(&p->cancel_result, -1);
    atomic_init(&p->hold_on_first, NULL);
    atomic_init(&p->released, false);
    atomic_init(&p->held_not_loading, 0);
    atomic_init(&p->supersede_on_first, NULL);
    p->supersede_path = NULL;
    p->supersede_outcome = NULL;
    atomic_init(&p->supersede_result, -1);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->first_cond, NULL);
}

static void progress_log_destroy(progress_log *p) {
    pthread_cond_destroy(&p->first_cond);
    pthread_mutex_destroy(&p->lock);
}

static void on_progress(void *userdata, const mm_progress *progress) {
    progress_log *p = (progress_log *)userdata;
    CHECK(progress->bytes_done <= progress->bytes_total);
    /* Calls may come from several loader threads at once, so their order is
     * not checked; the largest value seen must reach the total. */
    unsigned long long seen = atomic_load(&p->max_bytes);
    while (progress->bytes_done > seen &&
           !atomic_compare_exchange_weak(&p->max_bytes, &seen, progress->bytes_done)) {
    }
    if (atomic_fetch_add(&p->calls, 1) == 0) {
        mm_manager *m = atomic_load(&p->cancel_on_first);
        if (m != NULL) atomic_store(&p->cancel_result, (int)mm_manager_cancel(m));
        m = atomic_load(&p->supersede_on_first);
        if (m != NULL) {
            mm_result rc = mm_manager_load(m, p->supersede_path, on_done, p->supersede_outcome);
            atomic_store(&p->supersede_result, (int)rc);
        }
        pthread_mutex_lock(&p->lock);
        pthread_cond_broadcast(&p->first_cond);
        pthread_mutex_unlock(&p->lock);
        m = atomic_load(&p->hold_on_first);
        if (m != NULL) {
            /* Reads are allowed in callbacks, also while destroy runs; so is
             * reset, refused here (Loading) with INVALID_TRANSITION until
             * destroy has begun, then with SHUT_DOWN. */
            bool let_go = false;
            for (int i = 0; i < 10000 && !let_go; i++) {
                mm_state state;
                CHECK_OK(mm_manager_state(m, &state));
                if (state != MM_STATE_LOADING) atomic_fetch_add(&p->held_not_loading, 1);
                mm_result reset = mm_manager_reset(m);
                CHECK(reset == MM_RESULT_INVALID_TRANSITION || reset == MM_RESULT_SHUT_DOWN);
                let_go = atomic_load(&p->released) || reset == MM_RESULT_SHUT_DOWN;
                if (!let_go) usleep(1000);
            }
            CHECK(let_go);
        }
    }
}

/* ---- Helpers ----------------------------------------------------------- */

static mm_manager *new_manager(size_t chunk_size, progress_log *progress) {
    mm_manager_options options;
    mm_manager *m = NULL;
    CHECK_OK(mm_manager_options_init(&options));
    options.chunk_size = chunk_size;
    options.drain_timeout_ms = 500;
    if (progress != NULL) {
        options.progress = on_progress;
        options.progress_userdata = progress;
    }
    CHECK_OK(mm_manager_new(&options, &m));
    return m;
}

/* Wait for the first progress callback of the load just started. */
static void wait_first_progress(progress_log *p) {
    pthread_mutex_lock(&p->lock);
    while (atomic_load(&p->calls) == 0) pthread_cond_wait(&p->first_cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
}

/* Wait up to 5 s for `count` events (delivery is asynchronous); how many
 * have arrived. */
static size_t wait_events(event_log *log, size_t count) {
    size_t seen = 0;
    for (int tries = 0; tries < 500; tries++) {
        pthread_mutex_lock(&log->lock);
        seen = log->count;
        pthread_mutex_unlock(&log->lock);
        if (seen >= count) break;
        usleep(10 * 1000);
    }
    return seen;
}

static mm_state wait_settled(mm_manager *m) {
    mm_state state = MM_STATE_LOADING;
    CHECK_OK(mm_manager_wait(m, 30000, &state));
    return state;
}

static void check_config(mm_manager *m, const char *key, const char *expected) {
    char small[2];
    size_t len = 0;
    CHECK_RC(mm_manager_config(m, key, small, sizeof small, &len), MM_RESULT_BUFFER_TOO_SMALL);
    CHECK(len == strlen(expected));
    char *buf = (char *)malloc(len + 1);
    CHECK(buf != NULL);
    CHECK_OK(mm_manager_config(m, key, buf, len + 1, &len));
    CHECK(strcmp(buf, expected) == 0);
    free(buf);
}

/* ---- Scenarios --------------------------------------------------------- */

static void lifecycle(const char *tiny, const char *other) {
    progress_log progress;
    event_log log;
    load_outcome outcome;
    mm_subscription *sub = NULL;
    mm_snapshot snapshot;
    mm_state state;
    uint64_t u64 = 0;
    size_t n = 0;

    progress_log_init(&progress);
    load_outcome_init(&outcome);
    memset(&log, 0, sizeof log);
    pthread_mutex_init(&log.lock, NULL);

    mm_manager *m = new_manager(256, &progress);
    log.manager = m;
    CHECK_OK(mm_manager_subscribe(m, on_event, &log, &sub));
    CHECK_OK(mm_manager_state(m, &state));
    CHECK(state == MM_STATE_IDLE);

    /* Load: returns at once; the callback has run once wait returns. */
    CHECK_OK(mm_manager_load(m, tiny, on_done, &outcome));
    CHECK(wait_settled(m) == MM_STATE_READY);
    outcome_wait(&outcome);
    CHECK(outcome.calls == 1 && outcome.result == MM_RESULT_OK);
    CHECK(outcome.state == MM_STATE_READY);
    /* 3 tensors of 64 floats in 256-byte chunks: 3 progress calls. */
    CHECK(atomic_load(&progress.calls) == 3);
    CHECK(atomic_load(&progress.max_bytes) == 3 * 64 * 4);

    CHECK_OK(mm_manager_snapshot(m, &snapshot));
    CHECK(snapshot.state == MM_STATE_READY && snapshot.error == MM_RESULT_OK);
    CHECK(snapshot.generation >= 2);
    CHECK(snapshot.progress.bytes_done == 3 * 64 * 4);
    CHECK(snapshot.progress.bytes_total == 3 * 64 * 4);
    CHECK(snapshot.progress.tensors_done == 3 && snapshot.progress.tensors_total == 3);
    CHECK_OK(mm_manager_resident_bytes(m, &u64));
    CHECK(u64 == 3 * 64 * 4);

    /* Config. */
    CHECK_OK(mm_manager_sample_size(m, &u64));
    CHECK(u64 == 64);
    check_config(m, "sample_size", "64");
    check_config(m, "_class_name", "\"UNet2DConditionModel\"");
    check_config(m, "block_out_channels", "[32,64]");
    {
        char buf[16];
        CHECK_RC(mm_manager_config(m, "no_such_key", buf, sizeof buf, &n), MM_RESULT_NOT_FOUND);
        /* A size query: NULL buffer, zero length. */
        CHECK_RC(mm_manager_config(m, "sample_size", NULL, 0, &n), MM_RESULT_BUFFER_TOO_SMALL);
        CHECK(n == 2);
    }

    /* A lease: tensors by index and by name, data in host memory. */
    mm_lease *lease = NULL;
    CHECK_OK(mm_manager_acquire(m, &lease));
    CHECK_OK(mm_lease_tensor_count(lease, &n));
    CHECK(n == 3);
    for (size_t t = 0; t < 3; t++) {
        const char *name = NULL;
        char expected[8];
        mm_tensor tensor;
        size_t index = 99;
        snprintf(expected, sizeof expected, "t%zu", t);
        CHECK_OK(mm_lease_tensor_name(lease, t, &name));
        CHECK(strcmp(name, expected) == 0);
        CHECK_OK(mm_lease_tensor_find(lease, expected, &index));
        CHECK(index == t);
        CHECK_OK(mm_lease_tensor(lease, t, &tensor));
        CHECK(tensor.name == name);
        CHECK(tensor.dtype == MM_DTYPE_F32);
        CHECK(tensor.rank == 1 && tensor.shape[0] == 64);
        CHECK(tensor.data_len == 64 * sizeof(float));
        const float *data = (const float *)tensor.data;
        for (size_t i = 0; i < 64; i++) CHECK(data[i] == (float)mm_test_value(t, i));
    }
    {
        const char *name = "sentinel";
        mm_tensor tensor;
        CHECK_RC(mm_lease_tensor_name(lease, 3, &name), MM_RESULT_NOT_FOUND);
        CHECK(strcmp(name, "sentinel") == 0);
        CHECK_RC(mm_lease_tensor(lease, 3, &tensor), MM_RESULT_NOT_FOUND);
        CHECK_RC(mm_lease_tensor_find(lease, "t9", &n), MM_RESULT_NOT_FOUND);
    }

    /* A lease held across an unload: the unload waits for it. */
    {
        mm_tensor tensor;
        size_t leases = 99;
        CHECK_OK(mm_lease_tensor(lease, 2, &tensor));
        CHECK_RC(mm_manager_unload_timeout(m, 100, &leases), MM_RESULT_LEASES_OUTSTANDING);
        CHECK(leases == 1);
        CHECK_OK(mm_manager_state(m, &state));
        CHECK(state == MM_STATE_UNLOADING);
        CHECK_OK(mm_manager_outstanding_leases(m, &n));
        CHECK(n == 1);
        /* New leases are refused, the held one still reads. */
        mm_lease *second = NULL;
        CHECK_RC(mm_manager_acquire(m, &second), MM_RESULT_NOT_READY);
        CHECK(second == NULL);
        CHECK(((const float *)tensor.data)[63] == (float)mm_test_value(2, 63));
        mm_lease_release(lease);
        CHECK(wait_settled(m) == MM_STATE_IDLE);
        CHECK_OK(mm_manager_resident_bytes(m, &u64));
        CHECK(u64 == 0);
        CHECK_RC(mm_manager_sample_size(m, &u64), MM_RESULT_NOT_READY);
    }

    /* Switching models: Ready(tiny) -> load(other) unloads tiny first. */
    CHECK_OK(mm_manager_load(m, tiny, NULL, NULL));
    CHECK(wait_settled(m) == MM_STATE_READY);
    CHECK_OK(mm_manager_load(m, other, NULL, NULL));
    CHECK(wait_settled(m) == MM_STATE_READY);
    CHECK_OK(mm_manager_sample_size(m, &u64));
    CHECK(u64 == 96);
    /* Loading the model that is ready does not reload it. */
    CHECK_OK(mm_manager_snapshot(m, &snapshot));
    uint64_t generation = snapshot.generation;
    CHECK_OK(mm_manager_load(m, other, NULL, NULL));
    CHECK(wait_settled(m) == MM_STATE_READY);
    CHECK_OK(mm_manager_snapshot(m, &snapshot));
    CHECK(snapshot.generation == generation);

    /* Unload without waiting, then wait. */
    CHECK_OK(mm_manager_unload(m));
    CHECK(wait_settled(m) == MM_STATE_IDLE);
    CHECK_RC(mm_manager_unload(m), MM_RESULT_INVALID_TRANSITION);
    CHECK_RC(mm_manager_cancel(m), MM_RESULT_INVALID_TRANSITION);
    {
        char buf[128];
        CHECK_OK(mm_last_error_message(buf, sizeof buf, &n));
        CHECK(strstr(buf, "idle") != NULL);
    }

    /* Events: every transition, in order; destroy and wait refused inside.
     * Delivery is asynchronous: give the last ones time to arrive. */
    for (int tries = 0; tries < 500; tries++) {
        pthread_mutex_lock(&log.lock);
        size_t count = log.count;
        pthread_mutex_unlock(&log.lock);
        if (count >= 12) break;
        usleep(10 * 1000);
    }
    mm_subscription_unsubscribe(sub);
    pthread_mutex_lock(&log.lock);
    {
        static const mm_state expected[][2] = {
            {MM_STATE_IDLE, MM_STATE_LOADING},      {MM_STATE_LOADING, MM_STATE_READY},
            {MM_STATE_READY, MM_STATE_UNLOADING},   {MM_STATE_UNLOADING, MM_STATE_IDLE},
            {MM_STATE_IDLE, MM_STATE_LOADING},      {MM_STATE_LOADING, MM_STATE_READY},
            {MM_STATE_READY, MM_STATE_UNLOADING},   {MM_STATE_UNLOADING, MM_STATE_IDLE},
            {MM_STATE_IDLE, MM_STATE_LOADING},      {MM_STATE_LOADING, MM_STATE_READY},
            {MM_STATE_READY, MM_STATE_UNLOADING},   {MM_STATE_UNLOADING, MM_STATE_IDLE},
        };
        size_t count = sizeof expected / sizeof expected[0];
        CHECK(log.count == count);
        for (size_t i = 0; i < log.count; i++) {
            CHECK(log.events[i].from == expected[i][0]);
            CHECK(log.events[i].to == expected[i][1]);
            CHECK(log.events[i].snapshot.state == expected[i][1]);
            CHECK(log.events[i].missed == 0);
            if (i > 0) CHECK(log.events[i].snapshot.generation > log.events[i - 1].snapshot.generation);
        }
        CHECK(log.events[1].command == MM_COMMAND_FINISH);
        CHECK(log.destroy_inside == MM_RESULT_CALLED_FROM_CALLBACK);
        CHECK(log.wait_inside == MM_RESULT_CALLED_FROM_CALLBACK);
    }
    size_t seen = log.count;
    pthread_mutex_unlock(&log.lock);

    /* After unsubscribe, the callback is never called again. */
    CHECK_OK(mm_manager_load(m, tiny, NULL, NULL));
    CHECK(wait_settled(m) == MM_STATE_READY);
    CHECK_OK(mm_manager_destroy(m));
    pthread_mutex_lock(&log.lock);
    CHECK(log.count == seen);
    pthread_mutex_unlock(&log.lock);

    pthread_mutex_destroy(&log.lock);
    load_outcome_destroy(&outcome);
    progress_log_destroy(&progress);
}

/* Cancel from the first progress callback: deterministic, the load stops at
 * the next chunk. */
static void cancel_mid_load(const char *big, const char *tiny) {
    progress_log progress;
    load_outcome outcome;
    mm_snapshot snapshot;
    mm_state state;
    uint64_t u64 = 1;
    progress_log_init(&progress);
    load_outcome_init(&outcome);

    mm_manager *m = new_manager(4096, &progress);
    atomic_store(&progress.cancel_on_first, m);
    CHECK_OK(mm_manager_load(m, big, on_done, &outcome));
    CHECK(wait_settled(m) == MM_STATE_IDLE);
    CHECK(atomic_load(&progress.cancel_result) == MM_RESULT_OK);
    /* 1 MiB in 4 KiB chunks is 256 chunks; each reading thread stops at its
     * next chunk. */
    CHECK(atomic_load(&progress.calls) < 16);
    outcome_wait(&outcome);
    CHECK(outcome.calls == 1 && outcome.result == MM_RESULT_CANCELLED);
    CHECK(strstr(outcome.message, "cancel") != NULL);
    /* The callback's snapshot is the Idle one: the memory is back. */
    CHECK(outcome.state == MM_STATE_IDLE);
    CHECK_OK(mm_manager_resident_bytes(m, &u64));
    CHECK(u64 == 0);

    /* Cancel from this thread while the load is held in its first chunk:
     * the state stays Loading, with what the load read still resident,
     * until the load has freed it; only then Idle, with 0 bytes. */
    event_log log;
    mm_subscription *sub = NULL;
    memset(&log, 0, sizeof log);
    pthread_mutex_init(&log.lock, NULL);
    log.manager = m;
    CHECK_OK(mm_manager_subscribe(m, on_event, &log, &sub));
    atomic_store(&progress.cancel_on_first, NULL);
    atomic_store(&progress.hold_on_first, m);
    atomic_store(&progress.released, false);
    atomic_store(&progress.calls, 0);
    load_outcome_reset(&outcome);
    CHECK_OK(mm_manager_load(m, big, on_done, &outcome));
    wait_first_progress(&progress);
    CHECK_OK(mm_manager_cancel(m));
    CHECK_OK(mm_manager_snapshot(m, &snapshot));
    CHECK(snapshot.state == MM_STATE_LOADING);
    CHECK(snapshot.resident_bytes > 0);
    CHECK(snapshot.unreclaimed_bytes == 0);
    /* A CPU manager: no device figures. */
    CHECK(snapshot.device_total_bytes == 0 && snapshot.device_free_before_load == 0 &&
          snapshot.device_free_after_release == 0);
    CHECK_RC(mm_manager_wait(m, 50, &state), MM_RESULT_TIMEOUT);
    CHECK(outcome_calls(&outcome) == 0); /* resolved once the memory is back */
    atomic_store(&progress.released, true);
    CHECK(wait_settled(m) == MM_STATE_IDLE);
    outcome_wait(&outcome);
    CHECK(outcome.result == MM_RESULT_CANCELLED);
    CHECK(outcome.state == MM_STATE_IDLE);
    CHECK_OK(mm_manager_snapshot(m, &snapshot));
    CHECK(snapshot.state == MM_STATE_IDLE && snapshot.resident_bytes == 0);
    /* The Idle event says so too: it carries 0 resident bytes. */
    CHECK(wait_events(&log, 2) == 2);
    pthread_mutex_lock(&log.lock);
    CHECK(log.events[0].from == MM_STATE_IDLE && log.events[0].to == MM_STATE_LOADING);
    CHECK(log.events[1].from == MM_STATE_LOADING && log.events[1].to == MM_STATE_IDLE);
    CHECK(log.events[1].command == MM_COMMAND_CANCEL);
    CHECK(log.events[1].snapshot.resident_bytes == 0);
    pthread_mutex_unlock(&log.lock);

    /* The same with unload: it cancels the load, which still frees first;
     * waiting for it with a deadline times out with no lease held
     * (MM_RESULT_TIMEOUT, not LEASES_OUTSTANDING). */
    atomic_store(&progress.released, false);
    atomic_store(&progress.calls, 0);
    load_outcome_reset(&outcome);
    CHECK_OK(mm_manager_load(m, big, on_done, &outcome));
    wait_first_progress(&progress);
    CHECK_OK(mm_manager_unload(m));
    CHECK_OK(mm_manager_state(m, &state));
    CHECK(state == MM_STATE_LOADING);
    {
        size_t leases = 99;
        CHECK_RC(mm_manager_unload_timeout(m, 50, &leases), MM_RESULT_TIMEOUT);
        CHECK(leases == 99); /* written only for LEASES_OUTSTANDING */
    }
    atomic_store(&progress.released, true);
    CHECK(wait_settled(m) == MM_STATE_IDLE);
    outcome_wait(&outcome);
    CHECK(outcome.result == MM_RESULT_CANCELLED);
    CHECK(wait_events(&log, 4) == 4);
    pthread_mutex_lock(&log.lock);
    CHECK(log.events[3].to == MM_STATE_IDLE && log.events[3].command == MM_COMMAND_CANCEL);
    CHECK(log.events[3].snapshot.resident_bytes == 0);
    pthread_mutex_unlock(&log.lock);
    mm_subscription_unsubscribe(sub);
    pthread_mutex_destroy(&log.lock);
    CHECK(atomic_load(&progress.held_not_loading) == 0);

    /* Superseded: a load of another model (from the first progress
     * callback) replaces the one in flight. */
    load_outcome first, second;
    load_outcome_init(&first);
    load_outcome_init(&second);
    atomic_store(&progress.hold_on_first, NULL);
    progress.supersede_path = tiny;
    progress.supersede_outcome = &second;
    atomic_store(&progress.supersede_on_first, m);
    atomic_store(&progress.calls, 0);
    CHECK_OK(mm_manager_load(m, big, on_done, &first));
    outcome_wait(&first);
    CHECK(atomic_load(&progress.supersede_result) == MM_RESULT_OK);
    CHECK(wait_settled(m) == MM_STATE_READY);
    outcome_wait(&first);
    outcome_wait(&second);
    CHECK(first.result == MM_RESULT_SUPERSEDED);
    CHECK(second.calls == 1 && second.result == MM_RESULT_OK);
    CHECK_OK(mm_manager_state(m, &state));
    CHECK(state == MM_STATE_READY);
    CHECK_OK(mm_manager_destroy(m));

    load_outcome_destroy(&first);
    load_outcome_destroy(&second);
    load_outcome_destroy(&outcome);
    progress_log_destroy(&progress);
}

static void corrupt_and_missing(const char *corrupt, const char *missing, const char *tiny) {
    load_outcome outcome;
    mm_snapshot snapshot;
    size_t len = 0;
    load_outcome_init(&outcome);
    mm_manager *m = new_manager(0, NULL);

    CHECK_OK(mm_manager_load(m, corrupt, on_done, &outcome));
    CHECK(wait_settled(m) == MM_STATE_FAILED);
    outcome_wait(&outcome);
    CHECK(outcome.calls == 1 && outcome.result == MM_RESULT_INVALID_MODEL);
    CHECK(outcome.state == MM_STATE_FAILED);
    CHECK(strstr(outcome.message, "corrupt.safetensors") != NULL);
    CHECK_OK(mm_manager_snapshot(m, &snapshot));
    CHECK(snapshot.state == MM_STATE_FAILED && snapshot.error == MM_RESULT_INVALID_MODEL);
    /* The same message, from the manager, on this thread. */
    CHECK_RC(mm_manager_error_message(m, NULL, 0, &len), MM_RESULT_BUFFER_TOO_SMALL);
    CHECK(len == strlen(outcome.message));
    {
        char *buf = (char *)malloc(len + 1);
        CHECK(buf != NULL);
        CHECK_OK(mm_manager_error_message(m, buf, len + 1, &len));
        CHECK(strcmp(buf, outcome.message) == 0);
        free(buf);
    }
    mm_lease *lease = NULL;
    CHECK_RC(mm_manager_acquire(m, &lease), MM_RESULT_NOT_READY);
    CHECK_OK(mm_manager_reset(m));
    CHECK_RC(mm_manager_reset(m), MM_RESULT_INVALID_TRANSITION);
    {
        char buf[8];
        CHECK_RC(mm_manager_error_message(m, buf, sizeof buf, &len), MM_RESULT_NOT_FOUND);
    }

    /* A missing file fails with its own code; a retry of a good model works. */
    load_outcome_reset(&outcome);
    CHECK_OK(mm_manager_load(m, missing, on_done, &outcome));
    CHECK(wait_settled(m) == MM_STATE_FAILED);
    outcome_wait(&outcome);
    CHECK(outcome.result == MM_RESULT_MISSING_FILE);
    CHECK_OK(mm_manager_load(m, tiny, NULL, NULL));
    CHECK(wait_settled(m) == MM_STATE_READY);
    CHECK_OK(mm_manager_destroy(m));
    load_outcome_destroy(&outcome);
}

/* Destroy while a load runs: the load is cancelled, its callback called
 * before destroy returns; a lease may outlive its manager. */
static void destroy_during_load(const char *big, const char *tiny) {
    progress_log progress;
    load_outcome outcome;
    progress_log_init(&progress);
    load_outcome_init(&outcome);

    /* The load is held in its first chunk until destroy has begun; it is
     * still Loading then, and destroy waits for it to free what it read. */
    mm_manager *m = new_manager(4096, &progress);
    atomic_store(&progress.hold_on_first, m);
    CHECK_OK(mm_manager_load(m, big, on_done, &outcome));
    wait_first_progress(&progress);
    CHECK_OK(mm_manager_destroy(m));
    CHECK(outcome_calls(&outcome) == 1); /* delivered before destroy returned */
    CHECK(outcome.result == MM_RESULT_CANCELLED);
    CHECK(outcome.state == MM_STATE_IDLE);
    CHECK(atomic_load(&progress.held_not_loading) == 0);

    /* Destroy right after load, before any progress. */
    load_outcome_reset(&outcome);
    m = new_manager(4096, NULL);
    CHECK_OK(mm_manager_load(m, big, on_done, &outcome));
    CHECK_OK(mm_manager_destroy(m));
    CHECK(outcome_calls(&outcome) == 1);
    CHECK(outcome.result == MM_RESULT_CANCELLED || outcome.result == MM_RESULT_OK);

    /* A lease outlives its manager (destroy gives up on it after the drain
     * timeout); its data stays readable until released. */
    mm_lease *lease = NULL;
    mm_tensor tensor;
    mm_state state;
    m = new_manager(0, NULL);
    CHECK_OK(mm_manager_load(m, tiny, NULL, NULL));
    CHECK_OK(mm_manager_wait(m, MM_TIMEOUT_INFINITE, &state));
    CHECK(state == MM_STATE_READY);
    CHECK_OK(mm_manager_acquire(m, &lease));
    CHECK_OK(mm_manager_destroy(m));
    CHECK_OK(mm_lease_tensor(lease, 1, &tensor));
    CHECK(((const float *)tensor.data)[5] == (float)mm_test_value(1, 5));
    mm_lease_release(lease);

    load_outcome_destroy(&outcome);
    progress_log_destroy(&progress);
}

int main(void) {
    char root[512], tiny[600], other[600], big[600], corrupt[600], missing[600];
    mm_test_tempdir(root, sizeof root);
    snprintf(tiny, sizeof tiny, "%s/tiny", root);
    snprintf(other, sizeof other, "%s/other", root);
    snprintf(big, sizeof big, "%s/big", root);
    snprintf(corrupt, sizeof corrupt, "%s/corrupt.safetensors", root);
    snprintf(missing, sizeof missing, "%s/missing.safetensors", root);
    mm_test_write_model(tiny, 3, 64, 64);
    mm_test_write_model(other, 5, 32, 96);
    mm_test_write_model(big, 4, 64 * 1024, 128);
    mm_test_write_corrupt(corrupt);

    setvbuf(stdout, NULL, _IONBF, 0);
    printf("model-manager %s\n", mm_version());
    CHECK(strcmp(mm_result_name(MM_RESULT_LEASES_OUTSTANDING), "MM_RESULT_LEASES_OUTSTANDING") == 0);
    CHECK(strcmp(mm_state_name(MM_STATE_UNLOADING), "unloading") == 0);

    lifecycle(tiny, other);
    printf("ok lifecycle\n");
    cancel_mid_load(big, tiny);
    printf("ok cancel in the middle of a load\n");
    corrupt_and_missing(corrupt, missing, tiny);
    printf("ok corrupt and missing files\n");
    mm_test_null_arguments(tiny);
    printf("ok NULL arguments\n");
    destroy_during_load(big, tiny);
    printf("ok destroy during a load\n");

    mm_test_rmtree(root);
    printf("all C tests passed\n");
    return 0;
}
