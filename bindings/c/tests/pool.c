/*
 * The pool through the C API, as a C11 program: models added by id under a
 * budget for one (acquire evicts, pins refuse, keep-alive expires, unload
 * waits for leases, reload keeps an old lease readable), a budget for two
 * (a load waiting for leased memory gives up with MM_RESULT_MEMORY_BUSY, a
 * reload beside the serving version, the retry cooldown), errors for
 * unknown ids and bad options, and a lease that outlives its pool. Run by
 * bindings/c/test.sh under ASan/UBSan/LSan and under valgrind.
 */
#include <string.h>
#include <time.h>

#include "common.h"

#define TENSORS 4
#define ELEMS 4096
#define MODEL_BYTES ((uint64_t)TENSORS * ELEMS * sizeof(float))
#define WAIT_MS 30000u

static char dir[1024];

static void model_path(char *out, size_t len, const char *name) {
    snprintf(out, len, "%s/%s", dir, name);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static mm_pool_model_status status_of(const mm_pool *pool, const char *id) {
    mm_pool_model_status s;
    memset(&s, 0, sizeof s);
    CHECK_OK(mm_pool_status(pool, id, &s));
    CHECK(!s.parked && s.parked_bytes == 0);
    return s;
}

static mm_pool_totals stats_of(const mm_pool *pool) {
    mm_pool_totals s;
    memset(&s, 0, sizeof s);
    CHECK_OK(mm_pool_stats(pool, &s));
    CHECK(s.charged <= s.budget);
    /* No host tier on the CPU: nothing parked, ever. */
    CHECK(s.host_budget == 0 && s.parked_bytes == 0 && s.parked_models == 0);
    CHECK(s.parks == 0 && s.resumes == 0);
    return s;
}

static uint64_t lease_version(const mm_lease *lease) {
    uint64_t v = 0;
    CHECK_OK(mm_lease_version(lease, &v));
    return v;
}

/* The last error message of this thread contains `needle`. */
static int last_error_has(const char *needle) {
    char message[1024];
    size_t len = 0;
    return mm_last_error_message(message, sizeof message, &len) == MM_RESULT_OK &&
           strstr(message, needle) != NULL;
}

static mm_pool *new_pool(uint64_t budget, uint32_t admission_ms, uint32_t cooldown_ms) {
    mm_pool_options options;
    mm_pool *pool = NULL;
    CHECK_OK(mm_pool_options_init(&options));
    options.memory_budget = budget;
    options.drain_timeout_ms = 300;
    options.admission_timeout_ms = admission_ms;
    options.retry_cooldown_ms = cooldown_ms;
    CHECK_OK(mm_pool_new(&options, &pool));
    return pool;
}

static void check_defaults(void) {
    mm_pool_options options;
    memset(&options, 0xab, sizeof options);
    CHECK_OK(mm_pool_options_init(&options));
    CHECK(strcmp(options.device, "cpu") == 0);
    CHECK(options.memory_budget == 0 && options.chunk_size == 0 && options.read_threads == 0);
    CHECK(options.dtype == MM_DTYPE_KEEP);
    CHECK(options.drain_timeout_ms == 5000);
    CHECK(options.keep_alive_ms == MM_KEEP_ALIVE_FOREVER);
    CHECK(options.max_queue == 64 && options.concurrent_loads == 1);
    CHECK(options.admission_timeout_ms == 60000 && options.retry_cooldown_ms == 5000);
    CHECK(options.headroom == 0);
    CHECK(options.host_budget == 0);

    /* Bad options are refused before anything starts. */
    mm_pool *pool = NULL;
    /* A host tier is a device pool's: on the CPU the models are in host
     * memory already. */
    options.host_budget = 1 << 20;
    CHECK_RC(mm_pool_new(&options, &pool), MM_RESULT_INVALID_ARGUMENT);
    CHECK(last_error_has("host tier"));
    CHECK(pool == NULL);
    options.host_budget = 0;
    options.max_queue = 0;
    CHECK_RC(mm_pool_new(&options, &pool), MM_RESULT_INVALID_ARGUMENT);
    CHECK(last_error_has("max_queue"));
    options.max_queue = 64;
    options.concurrent_loads = 0;
    CHECK_RC(mm_pool_new(&options, &pool), MM_RESULT_INVALID_ARGUMENT);
    options.concurrent_loads = 1;
    options.dtype = 99;
    CHECK_RC(mm_pool_new(&options, &pool), MM_RESULT_INVALID_ARGUMENT);
    options.dtype = MM_DTYPE_KEEP;
    options.device = "tpu:0";
    CHECK_RC(mm_pool_new(&options, &pool), MM_RESULT_INVALID_ARGUMENT);
    CHECK(pool == NULL);
    CHECK_OK(mm_pool_destroy(NULL));
}

/* Every function that takes an id answers MM_RESULT_UNKNOWN_MODEL for one
 * the pool does not know, and writes no out-param. */
static void check_unknown_ids(mm_pool *pool) {
    const mm_result UNKNOWN = MM_RESULT_UNKNOWN_MODEL;
    char path[1100];
    mm_lease *lease = NULL;
    uint64_t version = 42;
    bool cancelled = true;
    mm_pool_model_status status;
    char buf[64];
    size_t len = 42;
    model_path(path, sizeof path, "a");
    CHECK_RC(mm_pool_acquire(pool, "nope", WAIT_MS, &lease), UNKNOWN);
    CHECK(last_error_has("nope"));
    CHECK_RC(mm_pool_try_acquire(pool, "nope", &lease), UNKNOWN);
    CHECK(lease == NULL);
    CHECK_RC(mm_pool_load(pool, "nope", WAIT_MS), UNKNOWN);
    CHECK_RC(mm_pool_unload(pool, "nope", WAIT_MS), UNKNOWN);
    CHECK_RC(mm_pool_remove(pool, "nope", WAIT_MS), UNKNOWN);
    CHECK_RC(mm_pool_reload(pool, "nope", path, MM_RELOAD_POLICY_KEEP_SERVING, WAIT_MS, &version),
             UNKNOWN);
    CHECK(version == 42);
    CHECK_RC(mm_pool_cancel(pool, "nope", &cancelled), UNKNOWN);
    CHECK(cancelled);
    CHECK_RC(mm_pool_pin(pool, "nope"), UNKNOWN);
    CHECK_RC(mm_pool_unpin(pool, "nope"), UNKNOWN);
    CHECK_RC(mm_pool_set_keep_alive(pool, "nope", 10), UNKNOWN);
    CHECK_RC(mm_pool_status(pool, "nope", &status), UNKNOWN);
    CHECK_RC(mm_pool_error_message(pool, "nope", buf, sizeof buf, &len), UNKNOWN);
    CHECK(len == 42);
    /* A policy that is not one. */
    CHECK_RC(mm_pool_reload(pool, "a", path, 7, WAIT_MS, &version), MM_RESULT_INVALID_ARGUMENT);
    CHECK(version == 42);
}

/* A budget for one model. */
static void budget_for_one(void) {
    char a[1100], b[1100], b2[1100];
    model_path(a, sizeof a, "a");
    model_path(b, sizeof b, "b");
    model_path(b2, sizeof b2, "b2");
    mm_pool *pool = new_pool(MODEL_BYTES + MODEL_BYTES / 2, WAIT_MS, 0);

    mm_pool_totals stats = stats_of(pool);
    CHECK(stats.budget == MODEL_BYTES + MODEL_BYTES / 2);
    CHECK(stats.charged == 0 && stats.models == 0 && stats.loads == 0);

    CHECK_OK(mm_pool_add(pool, "a", a));
    CHECK_OK(mm_pool_add(pool, "b", b));
    CHECK_RC(mm_pool_add(pool, "a", b), MM_RESULT_INVALID_ARGUMENT);
    CHECK(last_error_has("already"));
    CHECK_RC(mm_pool_add(pool, "", a), MM_RESULT_INVALID_ARGUMENT);
    check_unknown_ids(pool);

    /* Known, not loaded. */
    mm_pool_model_status s = status_of(pool, "a");
    CHECK(s.state == MM_STATE_IDLE && s.version == 0 && s.loading_version == 0);
    CHECK(s.charged_bytes == 0 && s.resident_bytes == 0 && s.leases == 0 && s.waiters == 0);
    CHECK(!s.pinned && s.keep_alive_ms == MM_KEEP_ALIVE_FOREVER);
    CHECK(s.expires_in_ms == MM_POOL_NO_TIME && s.idle_for_ms == MM_POOL_NO_TIME);
    CHECK(s.last_error == MM_RESULT_OK);
    mm_lease *la = NULL, *lb = NULL;
    CHECK_RC(mm_pool_try_acquire(pool, "a", &la), MM_RESULT_NOT_READY);
    CHECK(la == NULL);

    /* Loaded on demand. */
    CHECK_OK(mm_pool_acquire(pool, "a", WAIT_MS, &la));
    CHECK(lease_version(la) == 1);
    CHECK(mm_test_lease_matches(la, 1, TENSORS, ELEMS));
    s = status_of(pool, "a");
    CHECK(s.state == MM_STATE_READY && s.version == 1 && s.leases == 1);
    CHECK(s.charged_bytes >= MODEL_BYTES && s.resident_bytes >= MODEL_BYTES);
    mm_lease *again = NULL;
    CHECK_OK(mm_pool_try_acquire(pool, "a", &again));
    CHECK(status_of(pool, "a").leases == 2);
    mm_lease_release(again);
    mm_lease_release(la);
    s = status_of(pool, "a");
    CHECK(s.leases == 0 && s.idle_for_ms != MM_POOL_NO_TIME);

    /* b does not fit beside a: acquiring it evicts a, whose memory is
     * back before b is admitted. */
    CHECK_OK(mm_pool_acquire(pool, "b", WAIT_MS, &lb));
    CHECK(mm_test_lease_matches(lb, 2, TENSORS, ELEMS));
    s = status_of(pool, "a");
    CHECK(s.version == 0 && s.charged_bytes == 0);
    stats = stats_of(pool);
    CHECK(stats.evictions == 1 && stats.loads == 2 && stats.resident_models == 1);
    CHECK_RC(mm_pool_try_acquire(pool, "a", &la), MM_RESULT_NOT_READY);

    /* A reload that keeps serving cannot fit beside b: refused, b serves on. */
    uint64_t version = 0;
    CHECK_RC(mm_pool_reload(pool, "b", b2, MM_RELOAD_POLICY_KEEP_SERVING, WAIT_MS, &version),
             MM_RESULT_INSUFFICIENT_MEMORY);
    CHECK(version == 0);
    s = status_of(pool, "b");
    CHECK(s.state == MM_STATE_READY && s.version == 1);
    CHECK(s.last_error == MM_RESULT_INSUFFICIENT_MEMORY);
    char message[512];
    size_t len = 0;
    CHECK_RC(mm_pool_error_message(pool, "b", NULL, 0, &len), MM_RESULT_BUFFER_TOO_SMALL);
    CHECK(len > 0 && len < sizeof message);
    CHECK_OK(mm_pool_error_message(pool, "b", message, sizeof message, &len));
    CHECK(strstr(message, "bytes") != NULL);

    /* Unload first: the reload waits for b's lease, which stays readable
     * meanwhile; once it is released the new version serves. */
    CHECK_RC(mm_pool_reload(pool, "b", b2, MM_RELOAD_POLICY_UNLOAD_FIRST, 100, &version),
             MM_RESULT_TIMEOUT);
    CHECK(version == 0);
    CHECK(mm_test_lease_matches(lb, 2, TENSORS, ELEMS));
    CHECK(lease_version(lb) == 1);
    mm_lease_release(lb);
    CHECK_OK(mm_pool_acquire(pool, "b", WAIT_MS, &lb));
    CHECK(mm_test_lease_matches(lb, 3, TENSORS, ELEMS));
    CHECK(lease_version(lb) > 1);
    s = status_of(pool, "b");
    CHECK(s.version == lease_version(lb) && s.last_error == MM_RESULT_OK);
    mm_lease_release(lb);

    /* A pinned b is never evicted: a cannot fit, at once. */
    CHECK_OK(mm_pool_pin(pool, "b"));
    CHECK(status_of(pool, "b").pinned);
    CHECK_RC(mm_pool_acquire(pool, "a", WAIT_MS, &la), MM_RESULT_INSUFFICIENT_MEMORY);
    CHECK(last_error_has("pinned"));
    CHECK(status_of(pool, "a").last_error == MM_RESULT_INSUFFICIENT_MEMORY);
    CHECK_OK(mm_pool_unpin(pool, "b"));
    CHECK(!status_of(pool, "b").pinned);
    CHECK_OK(mm_pool_load(pool, "a", WAIT_MS));
    s = status_of(pool, "a");
    CHECK(s.state == MM_STATE_READY && s.last_error == MM_RESULT_OK);
    CHECK(status_of(pool, "b").version == 0);

    /* Keep-alive 0: a, idle, expires at once (bounded wait). */
    CHECK_OK(mm_pool_set_keep_alive(pool, "a", 0));
    CHECK(status_of(pool, "a").keep_alive_ms == 0);
    for (int i = 0; i < 1000 && status_of(pool, "a").version != 0; i++) sleep_ms(10);
    CHECK(status_of(pool, "a").version == 0);
    CHECK(stats_of(pool).expirations == 1);
    CHECK_OK(mm_pool_set_keep_alive(pool, "a", MM_KEEP_ALIVE_FOREVER));

    /* An unload waits for leases; the lease stays readable meanwhile. */
    CHECK_OK(mm_pool_acquire(pool, "a", WAIT_MS, &la));
    CHECK_RC(mm_pool_unload(pool, "a", 50), MM_RESULT_TIMEOUT);
    CHECK(mm_test_lease_matches(la, 1, TENSORS, ELEMS));
    CHECK_RC(mm_pool_try_acquire(pool, "a", &again), MM_RESULT_NOT_READY);
    mm_lease_release(la);
    CHECK_OK(mm_pool_unload(pool, "a", MM_TIMEOUT_INFINITE));
    s = status_of(pool, "a");
    CHECK(s.state == MM_STATE_IDLE && s.charged_bytes == 0 && s.resident_bytes == 0);
    CHECK(stats_of(pool).charged == 0);

    bool cancelled = true;
    CHECK_OK(mm_pool_cancel(pool, "a", &cancelled));
    CHECK(!cancelled);

    /* The ids, in order. */
    stats = stats_of(pool);
    CHECK(stats.models == 2);
    const char *ids[2] = {"a", "b"};
    for (size_t i = 0; i < 2; i++) {
        char id[8];
        CHECK_OK(mm_pool_model_id(pool, i, id, sizeof id, &len));
        CHECK(strcmp(id, ids[i]) == 0 && len == 1);
    }
    CHECK_RC(mm_pool_model_id(pool, 2, message, sizeof message, &len), MM_RESULT_NOT_FOUND);

    /* Remove forgets; the id can come back. */
    CHECK_OK(mm_pool_remove(pool, "b", WAIT_MS));
    CHECK_RC(mm_pool_status(pool, "b", &s), MM_RESULT_UNKNOWN_MODEL);
    CHECK(stats_of(pool).models == 1);
    CHECK_OK(mm_pool_add(pool, "b", b));

    /* The metrics, through the buffer protocol. */
    len = 0;
    CHECK_RC(mm_pool_metrics_text(pool, NULL, 0, &len), MM_RESULT_BUFFER_TOO_SMALL);
    char *text = (char *)malloc(len + 64);
    CHECK(text != NULL);
    CHECK_OK(mm_pool_metrics_text(pool, text, len + 64, &len));
    CHECK(strlen(text) == len);
    CHECK(strstr(text, "model_manager_pool_loads_total") != NULL);
    CHECK(strstr(text, "model_manager_pool_evictions_total 2") != NULL);
    char budget_line[96];
    snprintf(budget_line, sizeof budget_line, "model_manager_pool_budget_bytes %llu",
             (unsigned long long)(MODEL_BYTES + MODEL_BYTES / 2));
    CHECK(strstr(text, budget_line) != NULL);
    free(text);

    /* A lease outlives its pool: still readable, released after destroy. */
    CHECK_OK(mm_pool_acquire(pool, "a", WAIT_MS, &la));
    CHECK_OK(mm_pool_destroy(pool));
    CHECK(mm_test_lease_matches(la, 1, TENSORS, ELEMS));
    mm_lease_release(la);
}

/* A budget for two models. */
static void budget_for_two(void) {
    char path[1100], b2[1100];
    mm_pool *pool = new_pool(2 * MODEL_BYTES + MODEL_BYTES / 2, 200, 600000);
    const char *names[3] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        model_path(path, sizeof path, names[i]);
        CHECK_OK(mm_pool_add(pool, names[i], path));
    }
    model_path(path, sizeof path, "broken.safetensors");
    CHECK_OK(mm_pool_add(pool, "broken", path));
    model_path(b2, sizeof b2, "b2");

    /* a and b leased: c's load waits for their memory, then gives up,
     * naming them. */
    mm_lease *la = NULL, *lb = NULL, *lc = NULL;
    CHECK_OK(mm_pool_acquire(pool, "a", WAIT_MS, &la));
    CHECK_OK(mm_pool_acquire(pool, "b", WAIT_MS, &lb));
    CHECK_RC(mm_pool_acquire(pool, "c", WAIT_MS, &lc), MM_RESULT_MEMORY_BUSY);
    CHECK(lc == NULL);
    CHECK(last_error_has("\"a\"") && last_error_has("\"b\""));
    /* Waiting in vain is not the model's fault: the error is recorded,
     * but the model is idle (no retry cooldown), not failed. */
    mm_pool_model_status s = status_of(pool, "c");
    CHECK(s.state == MM_STATE_IDLE && s.last_error == MM_RESULT_MEMORY_BUSY);
    mm_lease_release(la);

    /* A reload beside the serving version (a, idle, is evicted for it):
     * the old lease keeps its version and its bytes, new leases get the
     * new one. */
    uint64_t version = 0;
    CHECK_OK(mm_pool_reload(pool, "b", b2, MM_RELOAD_POLICY_KEEP_SERVING, WAIT_MS, &version));
    CHECK(version == 2);
    CHECK(lease_version(lb) == 1 && mm_test_lease_matches(lb, 2, TENSORS, ELEMS));
    mm_lease *lb2 = NULL;
    CHECK_OK(mm_pool_acquire(pool, "b", WAIT_MS, &lb2));
    CHECK(lease_version(lb2) == 2 && mm_test_lease_matches(lb2, 3, TENSORS, ELEMS));
    s = status_of(pool, "b");
    CHECK(s.version == 2 && s.leases == 2);
    mm_lease_release(lb);
    mm_lease_release(lb2);
    CHECK(stats_of(pool).charged <= 2 * MODEL_BYTES + MODEL_BYTES / 2);

    /* A broken model fails; during the cooldown acquires answer its error
     * without loading again. */
    mm_lease *lx = NULL;
    CHECK_RC(mm_pool_acquire(pool, "broken", WAIT_MS, &lx), MM_RESULT_INVALID_MODEL);
    s = status_of(pool, "broken");
    CHECK(s.state == MM_STATE_FAILED && s.last_error == MM_RESULT_INVALID_MODEL);
    uint64_t failures = stats_of(pool).failures;
    CHECK_RC(mm_pool_acquire(pool, "broken", WAIT_MS, &lx), MM_RESULT_INVALID_MODEL);
    CHECK(stats_of(pool).failures == failures);
    CHECK(lx == NULL);
    char message[512];
    size_t len = 0;
    CHECK_OK(mm_pool_error_message(pool, "broken", message, sizeof message, &len));
    CHECK(strstr(message, "broken.safetensors") != NULL);
    CHECK_RC(mm_pool_error_message(pool, "b", message, sizeof message, &len),
             MM_RESULT_NOT_FOUND);
    CHECK_OK(mm_pool_destroy(pool));
}

/* Working memory reserved with a lease, and the headroom: a budget for two
 * models, less a headroom of one model's bytes. */
static void working_memory(void) {
    char a[1100], b[1100];
    model_path(a, sizeof a, "a");
    model_path(b, sizeof b, "b");
    mm_pool_options options;
    mm_pool *pool = NULL;
    CHECK_OK(mm_pool_options_init(&options));
    options.memory_budget = 3 * MODEL_BYTES;
    options.headroom = MODEL_BYTES;
    options.admission_timeout_ms = 200;
    CHECK_OK(mm_pool_new(&options, &pool));
    CHECK(stats_of(pool).budget == 2 * MODEL_BYTES);
    CHECK_OK(mm_pool_add(pool, "a", a));
    CHECK_OK(mm_pool_add(pool, "b", b));

    /* b resident, unleased: a with a reserve of one model's bytes evicts it. */
    mm_lease *lease = NULL;
    CHECK_OK(mm_pool_acquire(pool, "b", WAIT_MS, &lease));
    uint64_t working = 42;
    CHECK_OK(mm_lease_working_bytes(lease, &working));
    CHECK(working == 0);
    mm_lease_release(lease);
    CHECK_OK(mm_pool_acquire_with(pool, "a", MODEL_BYTES, WAIT_MS, &lease));
    CHECK_OK(mm_lease_working_bytes(lease, &working));
    CHECK(working == MODEL_BYTES);
    mm_pool_totals totals = stats_of(pool);
    CHECK(totals.charged == 2 * MODEL_BYTES && totals.evictions == 1);
    CHECK(status_of(pool, "b").state == MM_STATE_IDLE);

    /* b cannot load while the reserve is held: it waits, then gives up. */
    mm_lease *other = NULL;
    CHECK_RC(mm_pool_acquire(pool, "b", WAIT_MS, &other), MM_RESULT_MEMORY_BUSY);
    CHECK(other == NULL);
    mm_lease_release(lease);
    lease = NULL;
    CHECK(stats_of(pool).charged == MODEL_BYTES);

    /* More than could ever fit beside the model: refused at once. */
    CHECK_RC(mm_pool_acquire_with(pool, "a", 2 * MODEL_BYTES, WAIT_MS, &lease),
             MM_RESULT_INSUFFICIENT_MEMORY);
    CHECK(lease == NULL);
    CHECK_RC(mm_pool_acquire_with(NULL, "a", 1, WAIT_MS, &lease), MM_RESULT_NULL_ARGUMENT);
    CHECK_RC(mm_pool_acquire_with(pool, "a", 1, WAIT_MS, NULL), MM_RESULT_NULL_ARGUMENT);
    CHECK_OK(mm_pool_destroy(pool));

    /* A headroom larger than the budget. */
    pool = NULL;
    options.headroom = 4 * MODEL_BYTES;
    CHECK_RC(mm_pool_new(&options, &pool), MM_RESULT_INVALID_ARGUMENT);
    CHECK(pool == NULL);
}

/* A diffusers pipeline as one model per component, under a budget for one. */
static void pipeline_components(void) {
    char root[1100], sub[1200];
    model_path(root, sizeof root, "sd");
    CHECK(mkdir(root, 0700) == 0);
    snprintf(sub, sizeof sub, "%s/model_index.json", root);
    FILE *f = fopen(sub, "w");
    CHECK(f != NULL);
    fprintf(f, "{\"unet\": [\"diffusers\", \"UNet2DConditionModel\"], "
               "\"vae\": [\"diffusers\", \"AutoencoderKL\"]}\n");
    CHECK(fclose(f) == 0);
    snprintf(sub, sizeof sub, "%s/unet", root);
    mm_test_write_model_seeded(sub, TENSORS, ELEMS, 64, 7);
    snprintf(sub, sizeof sub, "%s/vae", root);
    mm_test_write_model_seeded(sub, TENSORS, ELEMS, 64, 8);

    mm_pool *pool = new_pool(MODEL_BYTES + MODEL_BYTES / 2, 200, 0);
    size_t count = 0;
    CHECK_OK(mm_pool_add_pipeline(pool, "sd", root, &count));
    CHECK(count == 2);
    mm_lease *lease = NULL;
    size_t tensors = 0;
    CHECK_OK(mm_pool_acquire(pool, "sd/unet", WAIT_MS, &lease));
    CHECK_OK(mm_lease_tensor_count(lease, &tensors));
    CHECK(tensors == TENSORS);
    mm_lease_release(lease);
    CHECK_OK(mm_pool_acquire(pool, "sd/vae", WAIT_MS, &lease));
    mm_lease_release(lease);
    lease = NULL;
    /* Each its own model: the vae evicted the unet. */
    CHECK(status_of(pool, "sd/unet").state == MM_STATE_IDLE);
    CHECK(status_of(pool, "sd/vae").state == MM_STATE_READY);
    CHECK(stats_of(pool).evictions == 1);
    /* All or nothing, and only pipelines. */
    count = 42;
    CHECK_RC(mm_pool_add_pipeline(pool, "sd", root, &count), MM_RESULT_INVALID_ARGUMENT);
    model_path(sub, sizeof sub, "a");
    CHECK_RC(mm_pool_add_pipeline(pool, "x", sub, &count), MM_RESULT_INVALID_ARGUMENT);
    CHECK(count == 42);
    CHECK_RC(mm_pool_add_pipeline(pool, "y", root, NULL), MM_RESULT_NULL_ARGUMENT);
    CHECK_RC(mm_pool_add_pipeline(NULL, "y", root, &count), MM_RESULT_NULL_ARGUMENT);
    CHECK(stats_of(pool).models == 2);
    CHECK_OK(mm_pool_destroy(pool));
}

int main(void) {
    char path[1100];
    mm_test_tempdir(dir, sizeof dir);
    const char *names[4] = {"a", "b", "b2", "c"};
    const unsigned seeds[4] = {1, 2, 3, 4};
    for (int i = 0; i < 4; i++) {
        model_path(path, sizeof path, names[i]);
        mm_test_write_model_seeded(path, TENSORS, ELEMS, 64, seeds[i]);
    }
    model_path(path, sizeof path, "broken.safetensors");
    mm_test_write_corrupt(path);

    check_defaults();
    budget_for_one();
    budget_for_two();
    working_memory();
    pipeline_components();

    mm_test_rmtree(dir);
    printf("pool.c: all checks passed\n");
    return 0;
}
