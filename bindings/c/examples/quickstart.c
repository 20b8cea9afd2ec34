/* quickstart.c: load a model, watch it load, read a tensor, unload.
 *
 * Usage: quickstart MODEL   (a .safetensors file or a model folder)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "model_manager.h"

/* Print the last error of this thread and exit. */
static void die(const char *what, mm_result rc) {
    char message[512] = "";
    size_t len = 0;
    mm_last_error_message(message, sizeof message, &len);
    fprintf(stderr, "%s failed: %s: %s\n", what, mm_result_name(rc), message);
    exit(1);
}

#define TRY(call)                                \
    do {                                         \
        mm_result rc_ = (call);                  \
        if (rc_ != MM_RESULT_OK) die(#call, rc_); \
    } while (0)

/* Runs on a loader thread after every chunk read. */
static void on_progress(void *userdata, const mm_progress *p) {
    (void)userdata;
    fprintf(stderr, "\rloading: %" PRIu64 "/%" PRIu64 " bytes", p->bytes_done, p->bytes_total);
}

/* Runs on the manager's worker thread, once per transition, in order. */
static void on_event(void *userdata, const mm_event *e) {
    (void)userdata;
    printf("\n%s -> %s (generation %" PRIu64 ")\n", mm_state_name(e->from), mm_state_name(e->to),
           e->snapshot.generation);
}

/* Runs on the manager's worker thread, once, when the load ends. */
static void on_loaded(void *userdata, mm_result result, const mm_snapshot *snapshot) {
    (void)userdata;
    (void)snapshot;
    if (result != MM_RESULT_OK) {
        char message[512] = "";
        size_t len = 0;
        mm_last_error_message(message, sizeof message, &len); /* this load's error */
        fprintf(stderr, "\nload failed: %s: %s\n", mm_result_name(result), message);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL\n", argv[0]);
        return 2;
    }
    printf("model-manager %s\n", mm_version());

    mm_manager_options options;
    TRY(mm_manager_options_init(&options));
    options.device = "cpu";
    options.chunk_size = 1 << 20;
    options.progress = on_progress;

    mm_manager *manager = NULL;
    TRY(mm_manager_new(&options, &manager));
    mm_subscription *events = NULL;
    TRY(mm_manager_subscribe(manager, on_event, NULL, &events));

    /* Returns at once; the load runs on the manager's threads. */
    TRY(mm_manager_load(manager, argv[1], on_loaded, NULL));
    mm_state state;
    TRY(mm_manager_wait(manager, MM_TIMEOUT_INFINITE, &state));
    if (state != MM_STATE_READY) {
        mm_subscription_unsubscribe(events);
        mm_manager_destroy(manager);
        return 1;
    }

    uint64_t sample_size = 0;
    if (mm_manager_sample_size(manager, &sample_size) == MM_RESULT_OK)
        printf("sample_size: %" PRIu64 "\n", sample_size);

    /* A lease keeps the model loaded while we read it. */
    mm_lease *lease = NULL;
    TRY(mm_manager_acquire(manager, &lease));
    size_t count = 0;
    TRY(mm_lease_tensor_count(lease, &count));
    for (size_t i = 0; i < count; i++) {
        mm_tensor t;
        TRY(mm_lease_tensor(lease, i, &t));
        printf("%s: dtype %u, %zu bytes, shape [", t.name, (unsigned)t.dtype, t.data_len);
        for (size_t d = 0; d < t.rank; d++) printf("%s%zu", d ? ", " : "", t.shape[d]);
        printf("]");
        if (t.dtype == MM_DTYPE_F32 && t.data_len >= sizeof(float))
            printf(", first value %g", ((const float *)t.data)[0]);
        printf("\n");
    }
    mm_lease_release(lease); /* t.name, t.shape and t.data are invalid from here */

    size_t leases = 0;
    TRY(mm_manager_unload_timeout(manager, 5000, &leases));
    TRY(mm_manager_destroy(manager)); /* delivers the last events, joins threads */
    mm_subscription_unsubscribe(events);
    return 0;
}
