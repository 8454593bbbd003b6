/* Co4's causal running top-k on CPU: the definition of ops/co4/reference.py, one batch row at a time.
 *
 * Ranking is by ``ranking_key``: the value rounded to bfloat16 (to nearest, ties to even, on the float32 bits as
 * torch rounds; float64 through float32 first, as torch does), kept as a float next to the value.
 * Per batch row the k-best table of every channel is kept sorted, as k rows of C channels (row r: each channel's
 * r-th largest so far, with its key and source). A new token x (C values) is placed in two passes over the filled
 * rows, both elementwise over the channels (GCC vectorises them with selects, no per-channel branches):
 *   rank:   p = how many filled rows hold a key >= x's (ties go to the earlier entry, so equal keys stay above);
 *   insert: walking the rows from the bottom, row r keeps its entry if its key is >= x's, takes x if the row above
 *           it is >= x (or r = 0), and otherwise takes the row above it (the entries below the insertion point move
 *           down one; the last one drops out when the table is full).
 * The number of filled rows is the same for every channel (min(initial_count + t + 1, k)), so the loops over rows
 * have uniform bounds. After each token the table is copied out: top (B, T, k, C) row by row (0 in rows the prefix
 * cannot fill yet), the sources as int32 (-1 there), and the token's own rank (k when it did not enter).
 *
 * Backward: each row's gradient goes to the source that filled it (a scatter-add; sources < k are initial slots).
 * Sources are indices into cat([initial, values], 1): source s < k is initial slot s, s >= k is token s - k.
 *
 * Layouts (C-contiguous): values (B, T, C); initial (B, k, C) or NULL; top, d_top (B, T, k, C); rank (B, T, C)
 * int64; source (B, T, k, C) int32; d_values (B, T, C) and d_initial (B, k, C) zero-filled by the caller (d_initial
 * may be NULL without an initial table). Rows [b_begin, b_end) of the batch are done by one call. table_val and
 * table_src are the caller's scratch: k * C values and k * C int32; key_scratch: (k + 1) * C floats.
 * Compiled with -ffast-math: no infinities are used (unfilled rows are tracked by the count, not by -inf keys).
 */
#include <stdint.h>
#include <string.h>

static inline float bf16_round(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&x, &bits, sizeof x);
    return x;
}

#define DEFINE_RUNNING_TOPK(SUFFIX, real)                                                                          \
void running_topk_forward_##SUFFIX(const real *restrict values, const real *restrict initial, int64_t initial_count, \
                                   int64_t B, int64_t T, int64_t C, int64_t k,                                     \
                                   real *restrict top, int64_t *restrict rank, int32_t *restrict source,            \
                                   real *restrict table_val, int32_t *restrict table_src,                          \
                                   float *restrict key_scratch, int64_t b_begin, int64_t b_end) {                  \
    (void)B;                                                                                                       \
    float *restrict table_key = key_scratch;                                                                       \
    float *restrict x_key = key_scratch + k * C;                                                                   \
    for (int64_t b = b_begin; b < b_end; b++) {                                                                    \
        int64_t count = initial_count;                                                                             \
        for (int64_t r = 0; r < count; r++) {                                                                      \
            memcpy(table_val + r * C, initial + (b * k + r) * C, C * sizeof(real));                               \
            for (int64_t c = 0; c < C; c++) {                                                                      \
                table_src[r * C + c] = (int32_t)r;                                                                 \
                table_key[r * C + c] = bf16_round((float)table_val[r * C + c]);                                    \
            }                                                                                                      \
        }                                                                                                          \
        for (int64_t t = 0; t < T; t++) {                                                                          \
            const real *restrict x = values + (b * T + t) * C;                                                     \
            for (int64_t c = 0; c < C; c++) x_key[c] = bf16_round((float)x[c]);                                    \
            int64_t *restrict own_rank = rank + (b * T + t) * C;                                                   \
            const int32_t new_src = (int32_t)(k + t);                                                              \
            for (int64_t c = 0; c < C; c++) own_rank[c] = 0;                                                       \
            for (int64_t r = 0; r < count; r++) {                                                                  \
                const float *restrict row_key = table_key + r * C;                                                 \
                for (int64_t c = 0; c < C; c++) own_rank[c] += row_key[c] >= x_key[c];                             \
            }                                                                                                      \
            /* the new bottom row exists only while the table is not full; the rows below it never move */        \
            const int64_t last = count < k ? count : k - 1;                                                        \
            for (int64_t r = last; r >= 0; r--) {                                                                  \
                real *restrict row = table_val + r * C;                                                            \
                float *restrict key = table_key + r * C;                                                           \
                int32_t *restrict src = table_src + r * C;                                                         \
                /* row 0 has no row above: x takes it whenever it does not stay (the x pointers stand in) */      \
                const real *above = r > 0 ? row - C : x;                                                           \
                const float *above_key = r > 0 ? key - C : x_key;                                                  \
                const int32_t *above_src = r > 0 ? src - C : src;                                                  \
                const int filled = r < count, top_row = r == 0;                                                    \
                for (int64_t c = 0; c < C; c++) {                                                                  \
                    const int keep = filled && key[c] >= x_key[c];                                                 \
                    const int take_x = top_row || above_key[c] >= x_key[c];                                        \
                    const real moved = take_x ? x[c] : above[c];                                                   \
                    const float moved_key = take_x ? x_key[c] : above_key[c];                                      \
                    const int32_t moved_src = take_x ? new_src : above_src[c];                                     \
                    src[c] = keep ? src[c] : moved_src;                                                            \
                    row[c] = keep ? row[c] : moved;                                                                \
                    key[c] = keep ? key[c] : moved_key;                                                            \
                }                                                                                                  \
            }                                                                                                      \
            count = count < k ? count + 1 : k;                                                                     \
            for (int64_t c = 0; c < C; c++) own_rank[c] = own_rank[c] < k ? own_rank[c] : k;                       \
            real *restrict out = top + (b * T + t) * k * C;                                                        \
            int32_t *restrict out_src = source + (b * T + t) * k * C;                                              \
            memcpy(out, table_val, count * C * sizeof(real));                                                      \
            memcpy(out_src, table_src, count * C * sizeof(int32_t));                                               \
            for (int64_t i = count * C; i < k * C; i++) { out[i] = 0; out_src[i] = -1; }                           \
        }                                                                                                          \
    }                                                                                                              \
}                                                                                                                  \
                                                                                                                   \
void running_topk_backward_##SUFFIX(const real *restrict d_top, const int32_t *restrict source,                    \
                                    int64_t B, int64_t T, int64_t C, int64_t k,                                    \
                                    real *restrict d_values, real *restrict d_initial,                             \
                                    int64_t b_begin, int64_t b_end) {                                              \
    (void)B;                                                                                                       \
    for (int64_t b = b_begin; b < b_end; b++) {                                                                    \
        for (int64_t t = 0; t < T; t++) {                                                                          \
            const real *restrict grad = d_top + (b * T + t) * k * C;                                               \
            const int32_t *restrict src = source + (b * T + t) * k * C;                                            \
            for (int64_t r = 0; r < k; r++) {                                                                      \
                for (int64_t c = 0; c < C; c++) {                                                                  \
                    const int32_t s = src[r * C + c];                                                              \
                    if (s >= k) d_values[(b * T + (s - k)) * C + c] += grad[r * C + c];                            \
                    else if (s >= 0 && d_initial) d_initial[(b * k + s) * C + c] += grad[r * C + c];               \
                }                                                                                                  \
            }                                                                                                      \
        }                                                                                                          \
    }                                                                                                              \
}

DEFINE_RUNNING_TOPK(f32, float)
DEFINE_RUNNING_TOPK(f64, double)
