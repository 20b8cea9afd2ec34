/*
 * Helpers shared by the C and C++ tests: checks that print the library's
 * last error, a temporary folder, and a writer of small safetensors models
 * (8-byte little-endian header length, JSON header, then the data).
 *
 * Compiles as C11 and as C++17.
 */
#ifndef MM_TEST_COMMON_H
#define MM_TEST_COMMON_H

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_manager.h"

static inline void mm_test_fail(const char *file, int line, const char *what) {
    char message[1024];
    size_t len = 0;
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
    if (mm_last_error_message(message, sizeof message, &len) == MM_RESULT_OK) {
        fprintf(stderr, "  last error on this thread: %s\n", message);
    }
    abort();
}

#define CHECK(cond)                                      \
    do {                                                 \
        if (!(cond)) mm_test_fail(__FILE__, __LINE__, #cond); \
    } while (0)

/* Check that `expr` returns `expected`, naming both codes if not. */
#define CHECK_RC(expr, expected)                                                   \
    do {                                                                           \
        mm_result check_rc_got_ = (expr);                                          \
        if (check_rc_got_ != (mm_result)(expected)) {                              \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s\n", __FILE__,      \
                    __LINE__, #expr, mm_result_name(check_rc_got_),                \
                    mm_result_name((uint32_t)(expected)));                         \
            mm_test_fail(__FILE__, __LINE__, #expr);                               \
        }                                                                          \
    } while (0)

#define CHECK_OK(expr) CHECK_RC(expr, MM_RESULT_OK)

/* A fresh temporary folder; the path is written to `out` (PATH_MAX-ish). */
static inline void mm_test_tempdir(char *out, size_t len) {
    const char *base = getenv("TMPDIR");
    snprintf(out, len, "%s/mm-c-test-XXXXXX", base ? base : "/tmp");
    CHECK(mkdtemp(out) != NULL);
}

static inline int mm_test_rm_entry(const char *path, const struct stat *sb, int flag,
                                   struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* rm -rf `path`. */
static inline void mm_test_rmtree(const char *path) {
    nftw(path, mm_test_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The value of element `i` of tensor `t` in a model written with `seed`:
 * small integers, exact in every dtype used; models of different seeds
 * differ. */
static inline uint32_t mm_test_value_seeded(unsigned seed, size_t t, size_t i) {
    return (uint32_t)((seed * 31u + t * 7 + i) % 251);
}

/* The value of element `i` of tensor `t` in the models written by
 * mm_test_write_model (seed 0). */
static inline uint32_t mm_test_value(size_t t, size_t i) {
    return mm_test_value_seeded(0, t, i);
}

/* As mm_test_write_model, with t_k[i] = mm_test_value_seeded(seed, k, i). */
static inline void mm_test_write_model_seeded(const char *dir, size_t tensors, size_t elems,
                                              unsigned sample_size, unsigned seed) {
    char path[4096];
    size_t cap = 128 + tensors * 96;
    char *header = (char *)malloc(cap);
    size_t used = 0;
    size_t offset = 0;
    CHECK(header != NULL);
    CHECK(mkdir(dir, 0700) == 0);

    used += (size_t)snprintf(header + used, cap - used, "{");
    for (size_t t = 0; t < tensors; t++) {
        size_t bytes = elems * 4;
        used += (size_t)snprintf(header + used, cap - used,
                                 "%s\"t%zu\":{\"dtype\":\"F32\",\"shape\":[%zu],"
                                 "\"data_offsets\":[%zu,%zu]}",
                                 t ? "," : "", t, elems, offset, offset + bytes);
        offset += bytes;
    }
    used += (size_t)snprintf(header + used, cap - used, "}");
    CHECK(used < cap);
    /* Pad the header with spaces so the data starts 8-byte aligned. */
    while (used % 8 != 0) header[used++] = ' ';

    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    unsigned char len_le[8];
    for (int b = 0; b < 8; b++) len_le[b] = (unsigned char)(((uint64_t)used >> (8 * b)) & 0xff);
    CHECK(fwrite(len_le, 1, 8, f) == 8);
    CHECK(fwrite(header, 1, used, f) == used);
    float *data = (float *)malloc(elems * sizeof(float));
    CHECK(data != NULL);
    for (size_t t = 0; t < tensors; t++) {
        for (size_t i = 0; i < elems; i++) data[i] = (float)mm_test_value_seeded(seed, t, i);
        /* float is little-endian IEEE 754 on every platform these tests run on. */
        CHECK(fwrite(data, sizeof(float), elems, f) == elems);
    }
    free(data);
    free(header);
    CHECK(fclose(f) == 0);

    snprintf(path, sizeof path, "%s/config.json", dir);
    f = fopen(path, "w");
    CHECK(f != NULL);
    fprintf(f,
            "{\"_class_name\": \"UNet2DConditionModel\", \"sample_size\": %u, "
            "\"block_out_channels\": [32, 64]}\n",
            sample_size);
    CHECK(fclose(f) == 0);
}

/* Write `dir/model.safetensors` with `tensors` tensors named t0, t1, ...,
 * each of `elems` float32 elements (t_k[i] = mm_test_value(k, i)), plus
 * `dir/config.json` with `sample_size`. Creates `dir`. */
static inline void mm_test_write_model(const char *dir, size_t tensors, size_t elems,
                                       unsigned sample_size) {
    mm_test_write_model_seeded(dir, tensors, elems, sample_size, 0);
}

/* Whether `lease` holds exactly the model mm_test_write_model_seeded wrote
 * with `seed`, `tensors` and `elems`: every byte of every tensor. */
static inline int mm_test_lease_matches(const mm_lease *lease, unsigned seed, size_t tensors,
                                        size_t elems) {
    size_t count = 0;
    if (mm_lease_tensor_count(lease, &count) != MM_RESULT_OK || count != tensors) return 0;
    for (size_t t = 0; t < tensors; t++) {
        char name[32];
        size_t index = 0;
        mm_tensor tensor;
        snprintf(name, sizeof name, "t%zu", t);
        if (mm_lease_tensor_find(lease, name, &index) != MM_RESULT_OK) return 0;
        if (mm_lease_tensor(lease, index, &tensor) != MM_RESULT_OK) return 0;
        if (tensor.dtype != MM_DTYPE_F32 || tensor.data_len != elems * sizeof(float)) return 0;
        const float *data = (const float *)tensor.data;
        for (size_t i = 0; i < elems; i++) {
            if (data[i] != (float)mm_test_value_seeded(seed, t, i)) return 0;
        }
    }
    return 1;
}

/* Write a corrupt safetensors file: its header claims 1000 bytes, the file
 * has 12. */
static inline void mm_test_write_corrupt(const char *path) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    const unsigned char bytes[12] = {0xe8, 0x03, 0, 0, 0, 0, 0, 0, '{', '"', 't', '"'};
    CHECK(fwrite(bytes, 1, sizeof bytes, f) == sizeof bytes);
    CHECK(fclose(f) == 0);
}

#endif /* MM_TEST_COMMON_H */
