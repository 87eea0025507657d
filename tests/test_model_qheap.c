/* test_model_qheap.c — lmc_model_own_huge, the model's huge-page chunks for
 * quantized linears on a host backend: 64-byte aligned, disjoint and
 * writable pieces; a chunk starts 2 MB-aligned; a piece larger than a
 * chunk gets a chunk of its own; a reservation makes one chunk for all
 * pieces; everything released by lmc_model_free (the
 * ASan build's leak check). The loaders that use it (GGUF quantized
 * matrices, GPTQ/AWQ codes) are checked end to end by test_gguf_model,
 * test_quant_model and test_quant_cli (their outputs through these copies). */
#include "model/model.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int fails;
#define CHECK(c, ...)                                           \
    do {                                                        \
        if (!(c)) {                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                       \
            fprintf(stderr, "\n");                              \
            fails++;                                            \
        }                                                       \
    } while (0)

int main(void) {
    struct lmc_model m;
    memset(&m, 0, sizeof m);
    /* sizes: odd, a 768x768 Q4_K matrix, a chunk's worth that no longer fits, one larger than a chunk */
    const size_t sizes[] = {1, 331776, 4097, 63, 67000000, (size_t)70 << 20, 144, 7};
    enum { N = sizeof sizes / sizeof sizes[0] };
    uint8_t *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = lmc_model_own_huge(&m, sizes[i]);
        CHECK(p[i] != NULL, "piece %d (%zu bytes): NULL", i, sizes[i]);
        if (!p[i]) return 1;
        CHECK((uintptr_t)p[i] % 64 == 0, "piece %d not 64-byte aligned", i);
        memset(p[i], 0x40 + i, sizes[i]);
    }
    CHECK((uintptr_t)p[0] % ((uintptr_t)2 << 20) == 0, "the first chunk does not start 2 MB-aligned");
    /* 67 MB after the first pieces does not fit the first 64 MB chunk; the 70 MB piece has its own */
    CHECK((uintptr_t)p[4] % ((uintptr_t)2 << 20) == 0, "a new chunk (piece 4) does not start 2 MB-aligned");
    CHECK((uintptr_t)p[5] % ((uintptr_t)2 << 20) == 0, "the piece larger than a chunk is not a chunk's start");
    CHECK(p[1] == p[0] + 64 && p[2] == p[1] + 331776 && p[3] == p[2] + 4160, "pieces in one chunk are not packed");
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < N; j++)
            if (i != j)
                CHECK(p[i] + sizes[i] <= p[j] || p[j] + sizes[j] <= p[i], "pieces %d and %d overlap", i, j);
        size_t bad = 0;
        for (size_t b = 0; b < sizes[i]; b++) bad += p[i][b] != (uint8_t)(0x40 + i);
        CHECK(bad == 0, "piece %d: %zu bytes overwritten by another piece", i, bad);
    }
    lmc_model_free(&m);
    CHECK(m.qheap == NULL && m.qheap_left == 0 && m.n_owned == 0, "lmc_model_free left the chunks");
    /* a reservation: pieces that would take two 64 MB chunks share one */
    memset(&m, 0, sizeof m);
    lmc_model_qheap_reserve(&m, (size_t)100 << 20);
    uint8_t *a = lmc_model_own_huge(&m, (size_t)50 << 20), *b = lmc_model_own_huge(&m, (size_t)40 << 20);
    CHECK(a && b && (uintptr_t)a % ((uintptr_t)2 << 20) == 0 && b == a + ((size_t)50 << 20),
          "after a 100 MB reservation, 50 + 40 MB are not one chunk");
    CHECK(m.n_owned == 1, "a reservation and two pieces took %d allocations", m.n_owned);
    if (a && b) memset(b, 1, (size_t)40 << 20);
    lmc_model_free(&m);
    if (fails) return 1;
    printf("test_model_qheap: ok\n");
    return 0;
}
