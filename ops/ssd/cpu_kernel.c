/* SSD's intra-chunk weights on CPU, forward and backward: the (Q, Q) step of ops/ssd/reference.py's chunk_scores.
 *
 *   S[t, s] = CB[t, s] exp(a_t - a_s) dt_s   where s <= t (and keep[t, s], packed documents), else 0
 *
 * per block (batch and chunk, group g, head r of the group), CB shared by the group's heads. PyTorch builds that
 * from five (Q, Q)-sized elementwise ops per head and its backward from about ten; here the forward writes S once
 * and the backward recomputes exp(a_t - a_s) and writes every gradient in one pass over dS:
 *   dCB[t, s] = sum_r dS E dt_s,  ddt_s = sum_t dS CB E,  and with v = dS CB E dt_s: da_t += sum_s v, da_s -= sum_t v
 * Every exponent is a_t - a_s <= 0 for s <= t (a is a cumulative sum of dt A <= 0), and s > t is never evaluated.
 *
 * Layouts (float32, contiguous): CB, dCB (blocks, G, Q, Q); a, dt, da, ddt (blocks, G, R, Q); S, dS (blocks, G, R,
 * Q, Q); keep: (blocks, Q, Q) bytes or NULL (NULL: causal only). dCB, da and ddt are overwritten. One call does
 * every block on the calling thread.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

void ssd_scores_forward(const float *restrict CB, const float *restrict a, const float *restrict dt,
                        const uint8_t *restrict keep, float *restrict S,
                        int64_t blocks, int64_t groups, int64_t heads, int64_t Q) {
    for (int64_t blk = 0; blk < blocks; blk++) {
        const uint8_t *restrict kb = keep ? keep + blk * Q * Q : NULL;
        for (int64_t g = 0; g < groups; g++) {
            const float *restrict cb = CB + (blk * groups + g) * Q * Q;
            for (int64_t r = 0; r < heads; r++) {
                const int64_t head = (blk * groups + g) * heads + r;
                const float *restrict ah = a + head * Q, *restrict dth = dt + head * Q;
                float *restrict sh = S + head * Q * Q;
                for (int64_t t = 0; t < Q; t++) {
                    const float at = ah[t];
                    const float *restrict cbt = cb + t * Q;
                    float *restrict st = sh + t * Q;
                    for (int64_t s = 0; s <= t; s++)
                        st[s] = cbt[s] * expf(at - ah[s]) * dth[s];
                    for (int64_t s = t + 1; s < Q; s++)
                        st[s] = 0.0f;
                    if (kb)
                        for (int64_t s = 0; s <= t; s++)
                            st[s] = kb[t * Q + s] ? st[s] : 0.0f;
                }
            }
        }
    }
}

void ssd_scores_backward(const float *restrict CB, const float *restrict a, const float *restrict dt,
                         const uint8_t *restrict keep, const float *restrict dS,
                         float *restrict dCB, float *restrict da, float *restrict ddt,
                         int64_t blocks, int64_t groups, int64_t heads, int64_t Q) {
    memset(dCB, 0, blocks * groups * Q * Q * sizeof(float));
    memset(da, 0, blocks * groups * heads * Q * sizeof(float));
    memset(ddt, 0, blocks * groups * heads * Q * sizeof(float));
    for (int64_t blk = 0; blk < blocks; blk++) {
        const uint8_t *restrict kb = keep ? keep + blk * Q * Q : NULL;
        for (int64_t g = 0; g < groups; g++) {
            const float *restrict cb = CB + (blk * groups + g) * Q * Q;
            float *restrict dcb = dCB + (blk * groups + g) * Q * Q;
            for (int64_t r = 0; r < heads; r++) {
                const int64_t head = (blk * groups + g) * heads + r;
                const float *restrict ah = a + head * Q, *restrict dth = dt + head * Q;
                float *restrict dah = da + head * Q, *restrict ddth = ddt + head * Q;
                const float *restrict dsh = dS + head * Q * Q;
                for (int64_t t = 0; t < Q; t++) {
                    const float at = ah[t];
                    const float *restrict cbt = cb + t * Q, *restrict dst = dsh + t * Q;
                    const uint8_t *restrict kt = kb ? kb + t * Q : NULL;
                    float *restrict dcbt = dcb + t * Q;
                    float row = 0.0f;
                    for (int64_t s = 0; s <= t; s++) {
                        const float g_ts = kt && !kt[s] ? 0.0f : dst[s];
                        const float e = expf(at - ah[s]);
                        const float ge = g_ts * e;
                        const float u = ge * cbt[s];               /* d S / d dt_s */
                        const float v = u * dth[s];                /* d S / d (a_t - a_s) */
                        dcbt[s] += ge * dth[s];
                        ddth[s] += u;
                        dah[s] -= v;
                        row += v;
                    }
                    dah[t] += row;
                }
            }
        }
    }
}
