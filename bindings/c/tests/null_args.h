/*
 * Every pointer argument of every function, passed as NULL (and every string
 * argument passed as invalid UTF-8): each call must return an error code,
 * touch no out-param, and leave the manager (or pool) usable. `model_dir` is a model
 * written by mm_test_write_model. Compiles as C11 and as C++17.
 */
#ifndef MM_TEST_NULL_ARGS_H
#define MM_TEST_NULL_ARGS_H

#include "common.h"

static void mm_test_null_event(void *userdata, const mm_event *event) {
    (void)userdata;
    (void)event;
}

static void mm_test_null_arguments(const char *model_dir) {
    const mm_result NUL = MM_RESULT_NULL_ARGUMENT;
    const char bad_utf8[] = {'m', (char)0xc3, (char)0x28, 0};
    mm_manager_options options;
    mm_manager *m = NULL;
    mm_manager *untouched = (mm_manager *)&options; /* a sentinel, never used */
    mm_state state = MM_STATE_FAILED;
    mm_snapshot snapshot;
    uint64_t u64 = 42;
    size_t n = 42;
    char buf[256];
    const char *name = "sentinel";
    mm_subscription *sub = NULL;
    mm_lease *lease = NULL;
    mm_tensor tensor;
    mm_device_tensor device_tensor;

    /* Options and creation. */
    CHECK_RC(mm_manager_options_init(NULL), NUL);
    CHECK_OK(mm_manager_options_init(&options));
    CHECK_RC(mm_manager_new(NULL, &m), NUL);
    CHECK_RC(mm_manager_new(&options, NULL), NUL);
    options.device = NULL;
    m = untouched;
    CHECK_RC(mm_manager_new(&options, &m), NUL);
    CHECK(m == untouched);
    options.device = bad_utf8;
    CHECK_RC(mm_manager_new(&options, &m), MM_RESULT_INVALID_UTF8);
    options.device = "tpu:0";
    CHECK_RC(mm_manager_new(&options, &m), MM_RESULT_INVALID_ARGUMENT);
    CHECK(m == untouched);
    CHECK(mm_last_error_message(buf, sizeof buf, &n) == MM_RESULT_OK && strstr(buf, "tpu"));
    n = 42;
    CHECK_OK(mm_manager_options_init(&options));
    CHECK_OK(mm_manager_new(&options, &m));
    CHECK(m != untouched && m != NULL);
    CHECK_OK(mm_manager_destroy(NULL));

    /* Commands. */
    CHECK_RC(mm_manager_load(NULL, model_dir, NULL, NULL), NUL);
    CHECK_RC(mm_manager_load(m, NULL, NULL, NULL), NUL);
    CHECK_RC(mm_manager_load(m, bad_utf8, NULL, NULL), MM_RESULT_INVALID_UTF8);
    CHECK_RC(mm_manager_wait(NULL, 0, &state), NUL);
    CHECK_RC(mm_manager_wait(m, 0, NULL), NUL);
    CHECK_RC(mm_manager_cancel(NULL), NUL);
    CHECK_RC(mm_manager_unload(NULL), NUL);
    CHECK_RC(mm_manager_unload_timeout(NULL, 0, &n), NUL);
    CHECK_RC(mm_manager_unload_timeout(m, 0, NULL), NUL);
    CHECK_RC(mm_manager_reset(NULL), NUL);

    /* Reads. */
    CHECK_RC(mm_manager_state(NULL, &state), NUL);
    CHECK_RC(mm_manager_state(m, NULL), NUL);
    CHECK_RC(mm_manager_snapshot(NULL, &snapshot), NUL);
    CHECK_RC(mm_manager_snapshot(m, NULL), NUL);
    CHECK_RC(mm_manager_sample_size(NULL, &u64), NUL);
    CHECK_RC(mm_manager_sample_size(m, NULL), NUL);
    CHECK_RC(mm_manager_resident_bytes(NULL, &u64), NUL);
    CHECK_RC(mm_manager_resident_bytes(m, NULL), NUL);
    CHECK_RC(mm_manager_outstanding_leases(NULL, &n), NUL);
    CHECK_RC(mm_manager_outstanding_leases(m, NULL), NUL);
    CHECK_RC(mm_manager_error_message(NULL, buf, sizeof buf, &n), NUL);
    CHECK_RC(mm_manager_error_message(m, NULL, sizeof buf, &n), NUL);
    CHECK_RC(mm_manager_error_message(m, buf, sizeof buf, NULL), NUL);
    CHECK_RC(mm_manager_config(NULL, "sample_size", buf, sizeof buf, &n), NUL);
    CHECK_RC(mm_manager_config(m, NULL, buf, sizeof buf, &n), NUL);
    CHECK_RC(mm_manager_config(m, bad_utf8, buf, sizeof buf, &n), MM_RESULT_INVALID_UTF8);
    CHECK_RC(mm_manager_config(m, "sample_size", NULL, sizeof buf, &n), NUL);
    CHECK_RC(mm_manager_config(m, "sample_size", buf, sizeof buf, NULL), NUL);
    CHECK(u64 == 42 && n == 42 && state == MM_STATE_FAILED);

    /* Subscriptions. */
    CHECK_RC(mm_manager_subscribe(NULL, mm_test_null_event, NULL, &sub), NUL);
    CHECK_RC(mm_manager_subscribe(m, NULL, NULL, &sub), NUL);
    CHECK_RC(mm_manager_subscribe(m, mm_test_null_event, NULL, NULL), NUL);
    CHECK(sub == NULL);
    mm_subscription_unsubscribe(NULL);

    /* Pools. */
    mm_pool_options pool_options;
    mm_pool *p = NULL;
    mm_pool *p_untouched = (mm_pool *)&pool_options; /* a sentinel, never used */
    mm_pool_model_status pool_status;
    mm_pool_totals pool_totals;
    bool cancelled = true;
    CHECK_RC(mm_pool_options_init(NULL), NUL);
    CHECK_OK(mm_pool_options_init(&pool_options));
    CHECK_RC(mm_pool_new(NULL, &p), NUL);
    CHECK_RC(mm_pool_new(&pool_options, NULL), NUL);
    p = p_untouched;
    pool_options.device = NULL;
    CHECK_RC(mm_pool_new(&pool_options, &p), NUL);
    pool_options.device = bad_utf8;
    CHECK_RC(mm_pool_new(&pool_options, &p), MM_RESULT_INVALID_UTF8);
    CHECK(p == p_untouched);
    CHECK_OK(mm_pool_options_init(&pool_options));
    pool_options.memory_budget = 1 << 20;
    CHECK_OK(mm_pool_new(&pool_options, &p));
    CHECK(p != p_untouched && p != NULL);
    CHECK_OK(mm_pool_destroy(NULL));
    CHECK_RC(mm_pool_add(NULL, "m", model_dir), NUL);
    CHECK_RC(mm_pool_add(p, NULL, model_dir), NUL);
    CHECK_RC(mm_pool_add_pipeline(NULL, "m", model_dir, &n), NUL);
    CHECK_RC(mm_pool_add_pipeline(p, NULL, model_dir, &n), NUL);
    CHECK_RC(mm_pool_add_pipeline(p, "m", NULL, &n), NUL);
    CHECK_RC(mm_pool_add_pipeline(p, "m", model_dir, NULL), NUL);
    CHECK_RC(mm_pool_add_pipeline(p, bad_utf8, model_dir, &n), MM_RESULT_INVALID_UTF8);
    CHECK(n == 42);
    CHECK_RC(mm_pool_add(p, "m", NULL), NUL);
    CHECK_RC(mm_pool_add(p, bad_utf8, model_dir), MM_RESULT_INVALID_UTF8);
    CHECK_RC(mm_pool_add(p, "m", bad_utf8), MM_RESULT_INVALID_UTF8);
    CHECK_OK(mm_pool_add(p, "m", model_dir));
    CHECK_RC(mm_pool_remove(NULL, "m", 0), NUL);
    CHECK_RC(mm_pool_remove(p, NULL, 0), NUL);
    CHECK_RC(mm_pool_pin(NULL, "m"), NUL);
    CHECK_RC(mm_pool_pin(p, NULL), NUL);
    CHECK_RC(mm_pool_unpin(NULL, "m"), NUL);
    CHECK_RC(mm_pool_unpin(p, NULL), NUL);
    CHECK_RC(mm_pool_set_keep_alive(NULL, "m", 0), NUL);
    CHECK_RC(mm_pool_set_keep_alive(p, NULL, 0), NUL);
    CHECK_RC(mm_pool_acquire(NULL, "m", 0, &lease), NUL);
    CHECK_RC(mm_pool_acquire(p, NULL, 0, &lease), NUL);
    CHECK_RC(mm_pool_acquire(p, bad_utf8, 0, &lease), MM_RESULT_INVALID_UTF8);
    CHECK_RC(mm_pool_acquire(p, "m", 0, NULL), NUL);
    CHECK_RC(mm_pool_acquire_with(NULL, "m", 1, 0, &lease), NUL);
    CHECK_RC(mm_pool_acquire_with(p, NULL, 1, 0, &lease), NUL);
    CHECK_RC(mm_pool_acquire_with(p, bad_utf8, 1, 0, &lease), MM_RESULT_INVALID_UTF8);
    CHECK_RC(mm_pool_acquire_with(p, "m", 1, 0, NULL), NUL);
    CHECK_RC(mm_pool_try_acquire(NULL, "m", &lease), NUL);
    CHECK_RC(mm_pool_try_acquire(p, NULL, &lease), NUL);
    CHECK_RC(mm_pool_try_acquire(p, "m", NULL), NUL);
    CHECK(lease == NULL);
    CHECK_RC(mm_pool_load(NULL, "m", 0), NUL);
    CHECK_RC(mm_pool_load(p, NULL, 0), NUL);
    CHECK_RC(mm_pool_unload(NULL, "m", 0), NUL);
    CHECK_RC(mm_pool_unload(p, NULL, 0), NUL);
    CHECK_RC(mm_pool_reload(NULL, "m", model_dir, MM_RELOAD_POLICY_KEEP_SERVING, 0, &u64), NUL);
    CHECK_RC(mm_pool_reload(p, NULL, model_dir, MM_RELOAD_POLICY_KEEP_SERVING, 0, &u64), NUL);
    CHECK_RC(mm_pool_reload(p, "m", NULL, MM_RELOAD_POLICY_KEEP_SERVING, 0, &u64), NUL);
    CHECK_RC(mm_pool_reload(p, "m", bad_utf8, MM_RELOAD_POLICY_KEEP_SERVING, 0, &u64),
             MM_RESULT_INVALID_UTF8);
    CHECK_RC(mm_pool_reload(p, "m", model_dir, MM_RELOAD_POLICY_KEEP_SERVING, 0, NULL), NUL);
    CHECK_RC(mm_pool_cancel(NULL, "m", &cancelled), NUL);
    CHECK_RC(mm_pool_cancel(p, NULL, &cancelled), NUL);
    CHECK_RC(mm_pool_cancel(p, "m", NULL), NUL);
    CHECK_RC(mm_pool_status(NULL, "m", &pool_status), NUL);
    CHECK_RC(mm_pool_status(p, NULL, &pool_status), NUL);
    CHECK_RC(mm_pool_status(p, "m", NULL), NUL);
    CHECK_RC(mm_pool_stats(NULL, &pool_totals), NUL);
    CHECK_RC(mm_pool_stats(p, NULL), NUL);
    CHECK_RC(mm_pool_model_id(NULL, 0, buf, sizeof buf, &n), NUL);
    CHECK_RC(mm_pool_model_id(p, 0, NULL, sizeof buf, &n), NUL);
    CHECK_RC(mm_pool_model_id(p, 0, buf, sizeof buf, NULL), NUL);
    CHECK_RC(mm_pool_error_message(NULL, "m", buf, sizeof buf, &n), NUL);
    CHECK_RC(mm_pool_error_message(p, NULL, buf, sizeof buf, &n), NUL);
    CHECK_RC(mm_pool_error_message(p, "m", NULL, sizeof buf, &n), NUL);
    CHECK_RC(mm_pool_error_message(p, "m", buf, sizeof buf, NULL), NUL);
    CHECK_RC(mm_pool_metrics_text(NULL, buf, sizeof buf, &n), NUL);
    CHECK_RC(mm_pool_metrics_text(p, NULL, sizeof buf, &n), NUL);
    CHECK_RC(mm_pool_metrics_text(p, buf, sizeof buf, NULL), NUL);
    CHECK(u64 == 42 && n == 42 && cancelled);
    /* The pool is still usable, and its model was never loaded. */
    CHECK_OK(mm_pool_status(p, "m", &pool_status));
    CHECK(pool_status.state == MM_STATE_IDLE && pool_status.waiters == 0);
    CHECK_OK(mm_pool_acquire(p, "m", MM_TIMEOUT_INFINITE, &lease));
    CHECK_OK(mm_lease_version(lease, &u64));
    CHECK(u64 == 1);
    u64 = 42;
    mm_lease_release(lease);
    lease = NULL;
    CHECK_OK(mm_pool_destroy(p));

    /* Leases: first on a manager with nothing loaded, then on a real one. */
    CHECK_RC(mm_manager_acquire(NULL, &lease), NUL);
    CHECK_RC(mm_manager_acquire(m, NULL), NUL);
    CHECK_RC(mm_manager_acquire(m, &lease), MM_RESULT_NOT_READY);
    CHECK(lease == NULL);
    mm_lease_release(NULL);
    CHECK_OK(mm_manager_load(m, model_dir, NULL, NULL));
    CHECK_OK(mm_manager_wait(m, MM_TIMEOUT_INFINITE, &state));
    CHECK(state == MM_STATE_READY);
    CHECK_OK(mm_manager_acquire(m, &lease));
    CHECK_RC(mm_lease_version(lease, &u64), MM_RESULT_NOT_FOUND); /* a manager's: no version */
    CHECK_RC(mm_lease_version(NULL, &u64), NUL);
    CHECK_RC(mm_lease_version(lease, NULL), NUL);
    u64 = 42;
    CHECK_OK(mm_lease_working_bytes(lease, &u64)); /* a manager's: none */
    CHECK(u64 == 0);
    u64 = 42;
    CHECK_RC(mm_lease_working_bytes(NULL, &u64), NUL);
    CHECK_RC(mm_lease_working_bytes(lease, NULL), NUL);
    CHECK_RC(mm_lease_tensor_count(NULL, &n), NUL);
    CHECK_RC(mm_lease_tensor_count(lease, NULL), NUL);
    CHECK_RC(mm_lease_tensor_name(NULL, 0, &name), NUL);
    CHECK_RC(mm_lease_tensor_name(lease, 0, NULL), NUL);
    CHECK_RC(mm_lease_tensor_find(NULL, "t0", &n), NUL);
    CHECK_RC(mm_lease_tensor_find(lease, NULL, &n), NUL);
    CHECK_RC(mm_lease_tensor_find(lease, bad_utf8, &n), MM_RESULT_INVALID_UTF8);
    CHECK_RC(mm_lease_tensor_find(lease, "t0", NULL), NUL);
    CHECK_RC(mm_lease_tensor(NULL, 0, &tensor), NUL);
    CHECK_RC(mm_lease_tensor(lease, 0, NULL), NUL);
    CHECK_RC(mm_lease_tensor_on_device(NULL, 0, &device_tensor), NUL);
    CHECK_RC(mm_lease_tensor_on_device(lease, 0, NULL), NUL);
    CHECK(n == 42 && u64 == 42 && strcmp(name, "sentinel") == 0);
    mm_lease_release(lease);

    /* The last error: NULL len_out, NULL buffer with a length. */
    CHECK_RC(mm_last_error_message(buf, sizeof buf, NULL), NUL);
    CHECK_RC(mm_last_error_message(NULL, sizeof buf, &n), NUL);
    CHECK(n == 42);
    /* ... and they did not replace the message of the last failure. */
    CHECK_OK(mm_last_error_message(buf, sizeof buf, &n));
    CHECK(strstr(buf, "is NULL") != NULL);

    /* Static strings take no pointer; unknown values are named. */
    CHECK(strcmp(mm_result_name(100), "MM_RESULT_NULL_ARGUMENT") == 0);
    CHECK(strcmp(mm_result_name(99), "MM_RESULT_UNKNOWN") == 0);
    CHECK(strcmp(mm_state_name(77), "unknown") == 0);

    /* The manager is still usable. */
    CHECK_OK(mm_manager_state(m, &state));
    CHECK(state == MM_STATE_READY);
    CHECK_OK(mm_manager_destroy(m));
}

#endif /* MM_TEST_NULL_ARGS_H */
