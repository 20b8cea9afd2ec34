/*
 * Every pointer argument of every function, passed as NULL (and every string
 * argument passed as invalid UTF-8): each call must return an error code,
 * touch no out-param, and leave the manager usable. `model_dir` is a model
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
    CHECK(n == 42 && strcmp(name, "sentinel") == 0);
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
