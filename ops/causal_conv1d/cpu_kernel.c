/* Depthwise causal conv1d on CPU, forward and backward, channel-last: the op of ops/causal_conv1d/reference.py
 * (without initial states; cpu.py runs those elsewhere).
 *
 *   pre[b, t, d] = bias[d] + sum_k w[k, d] * x[b, t - (W - 1) + k, d]   (x before t = 0 reads zero)
 *   out          = silu(pre) when act, else pre
 *
 * Why channel-last: the blocks hold x as (batch, L, dim) rows (a slice of in_proj's output), so the inner loop over
 * dim reads contiguous floats and vectorises; the PyTorch form walks transposed views, one full pass per tap, and
 * its backward allocates a zeroed padded gradient per tap. Here the forward writes out once and the backward
 * recomputes pre (cheaper than storing it) and writes dx, dw, dbias in one pass over each batch row.
 *
 * Layouts (float32): x element (b, t, d) at x[b * x_sb + t * x_st + d] (dim contiguous); out, g, dx: (batch, L, dim)
 * contiguous; w, dw: (W, dim) (tap-major, the transpose of the (dim, W) weight); bias, dbias: (dim,) or NULL;
 * scratch: dim floats. dw and dbias are overwritten. One call does every batch row on the calling thread.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

/* Tap k of output row t reads input row s = t - (W - 1) + k; the taps before this one would read s < 0 (the zeros
 * before t = 0), so both passes start their tap loops here. */
static inline int64_t first_tap(int64_t t, int64_t width) { return t >= width - 1 ? 0 : width - 1 - t; }

/* pre for one output row t into row[0..dim) */
static inline void pre_row(const float *restrict xb, int64_t x_st, const float *restrict w,
                           const float *restrict bias, float *restrict row, int64_t t, int64_t dim, int64_t width) {
    if (bias)
        memcpy(row, bias, dim * sizeof(float));
    else
        memset(row, 0, dim * sizeof(float));
    for (int64_t k = first_tap(t, width); k < width; k++) {
        const int64_t s = t - (width - 1) + k;
        const float *restrict xs = xb + s * x_st;
        const float *restrict wk = w + k * dim;
        for (int64_t d = 0; d < dim; d++)
            row[d] += wk[d] * xs[d];
    }
}

void causal_conv1d_forward(const float *restrict x, int64_t x_sb, int64_t x_st, const float *restrict w,
                           const float *restrict bias, int64_t act, float *restrict out,
                           int64_t batch, int64_t length, int64_t dim, int64_t width) {
    for (int64_t b = 0; b < batch; b++) {
        for (int64_t t = 0; t < length; t++) {
            float *restrict row = out + (b * length + t) * dim;
            pre_row(x + b * x_sb, x_st, w, bias, row, t, dim, width);
            if (act)
                for (int64_t d = 0; d < dim; d++)
                    row[d] = row[d] * sigmoid(row[d]);
        }
    }
}

void causal_conv1d_backward(const float *restrict x, int64_t x_sb, int64_t x_st, const float *restrict w,
                            const float *restrict bias, int64_t act, const float *restrict g,
                            float *restrict dx, float *restrict dw, float *restrict dbias, float *restrict scratch,
                            int64_t batch, int64_t length, int64_t dim, int64_t width) {
    memset(dx, 0, batch * length * dim * sizeof(float));
    memset(dw, 0, width * dim * sizeof(float));
    if (dbias)
        memset(dbias, 0, dim * sizeof(float));
    for (int64_t b = 0; b < batch; b++) {
        const float *restrict xb = x + b * x_sb;
        for (int64_t t = 0; t < length; t++) {
            const float *restrict gt = g + (b * length + t) * dim;
            float *restrict gp = scratch;                       /* the gradient of pre at (b, t) */
            if (act) {
                pre_row(xb, x_st, w, bias, gp, t, dim, width);
                for (int64_t d = 0; d < dim; d++) {
                    const float s = sigmoid(gp[d]);
                    gp[d] = gt[d] * s * (1.0f + gp[d] * (1.0f - s));
                }
            } else {
                memcpy(gp, gt, dim * sizeof(float));
            }
            if (dbias)
                for (int64_t d = 0; d < dim; d++)
                    dbias[d] += gp[d];
            for (int64_t k = first_tap(t, width); k < width; k++) {
                const int64_t s = t - (width - 1) + k;
                const float *restrict xs = xb + s * x_st;
                const float *restrict wk = w + k * dim;
                float *restrict dxs = dx + (b * length + s) * dim;
                float *restrict dwk = dw + k * dim;
                for (int64_t d = 0; d < dim; d++) {
                    dxs[d] += wk[d] * gp[d];
                    dwk[d] += xs[d] * gp[d];
                }
            }
        }
    }
}
