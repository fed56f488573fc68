/* Batch-1 time of a C export's kernel alone, without Python: the numbers behind the kernel's build choices.
 *
 *     blmkd export CKPT --c -o exp/
 *     cc -O3 -ffp-contract=fast -fno-math-errno -std=c99 -march=x86-64-v3 [-DBLM_PORTABLE | -DBLM_REFERENCE] \
 *        -DBLM_EXPORT='"exp/blm_t.c"' benchmarks/c_kernel_timing.c -o timing -lm && ./timing
 *
 * Times `blm_forward` on one patch (64 random byte patches in turn), rounds of 3,000 calls; prints
 * the best and median round of the thread's CPU time per call (what the kernel costs, whatever else
 * the machine runs) and of the wall time, and a checksum of the logits (equal builds agree to ~1e-6).
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include BLM_EXPORT

static double seconds(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int by_value(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#ifdef BLM_MR
#define BLM_BUILD blm_build()
#else
#define BLM_BUILD "kernel before blm_build()" /* exports of older blmkd */
#endif

int main(void) {
    enum { N = 64, CALLS = 3000, ROUNDS = 7 };
    static uint8_t x[N * BLM_BANDS * BLM_L];
    static float logits[N * BLM_CLASSES];
    srand(1);
    for (size_t i = 0; i < sizeof x; i++) x[i] = (uint8_t)(rand() & 255);
    blm_forward(x, N, logits);
    double sum = 0.0;
    for (int i = 0; i < N * BLM_CLASSES; i++) sum += logits[i];
    double cpu[ROUNDS], wall[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        const double c0 = seconds(CLOCK_THREAD_CPUTIME_ID), w0 = seconds(CLOCK_MONOTONIC);
        for (int i = 0; i < CALLS; i++) blm_forward(x + (size_t)(i % N) * BLM_BANDS * BLM_L, 1, logits);
        cpu[r] = (seconds(CLOCK_THREAD_CPUTIME_ID) - c0) / CALLS * 1e6;
        wall[r] = (seconds(CLOCK_MONOTONIC) - w0) / CALLS * 1e6;
    }
    qsort(cpu, ROUNDS, sizeof cpu[0], by_value);
    qsort(wall, ROUNDS, sizeof wall[0], by_value);
    printf("%s: batch 1, %d rounds x %d calls: CPU best %.1f us median %.1f us; wall best %.1f us median %.1f us; "
           "logit checksum %.6f\n", BLM_BUILD, ROUNDS, CALLS, cpu[0], cpu[ROUNDS / 2], wall[0], wall[ROUNDS / 2], sum);
    return 0;
}
