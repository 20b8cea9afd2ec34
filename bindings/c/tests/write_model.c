/* Write a small model folder for the shell tests: write_model DIR
 * (3 float32 tensors of 64 elements, sample_size 64). */
#include "common.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    mm_test_write_model(argv[1], 3, 64, 64);
    return 0;
}
