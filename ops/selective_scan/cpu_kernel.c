/* Selective scan (Mamba-1) on CPU: the recurrence of ops/selective_scan/reference.py, one row at a time.
 *
 * A row is one (batch b, channel d). Its state h[NSTATE] lives in registers for the whole sequence, so per
 * (t, n) the forward reads nothing but its inputs and does one exp and three multiply-adds; nothing of size
 * (batch, dim, L, N) is ever stored. The forward keeps the state at the start of every CHUNK-step chunk;
 * the backward walks the chunks last to first, recomputes each chunk's states from its checkpoint into a
 * small per-row buffer (it stays in L1), then runs the gradient recurrence backwards through the chunk.
 *
 * The (b, d, t) work around the recurrence is done here too, once per step rather than once per state:
 *   dt_t = softplus(delta_t + delta_bias[d]) (bias, softplus optional), y_t = sum_n C h_t + D[d] u_t,
 *   out_t = y_t * silu(z_t) (gate optional); and in the backward the gradients of all of those.
 *
 * Layouts (all float32, C-contiguous unless a stride says otherwise):
 *   delta, u, z, out, d_out, d_delta, d_u, d_z: (rows, L), row r = b * dim + d; delta is the raw input
 *   delta_bias, D: (dim,) or NULL; d_delta_bias_rows, d_D_rows: (rows,), each row's sum over t
 *   A, d_A: (dim, NSTATE)
 *   B, C, d_B, d_C: element (b, g, t, n) at b*s_b + g*s_g + t*s_t + n, where g = d / channels_per_group
 *     (each of B and C has its own strides and grouping); a stride of 0 broadcasts (time-invariant B/C)
 *   h0, last, d_last, d_h0: (rows, NSTATE); checkpoints: (rows, n_chunks, NSTATE)
 *   restart: (batch, L) bytes or NULL; nonzero at step t means the decay into t is 0 (packed documents: the state
 *     starts from zero at each document's first step, as in the reference's seq_idx)
 * NSTATE and CHUNK are compile-time constants (-D), so h[] stays in registers and the n loops vectorise.
 * Rows [row_begin, row_end) are done by one call; callers split rows across threads, each thread with its own
 * d_A / d_B / d_C accumulators (they are sums over rows).
 * Every pointer is restrict: no output buffer may overlap another buffer (cpu.py allocates each output fresh);
 * without it GCC re-checks at every step whether the writes to d_B / d_C overlap the inputs (backward ~20% slower).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef NSTATE
#error "compile with -DNSTATE=<state size>"
#endif
#ifndef CHUNK
#define CHUNK 64
#endif

typedef struct {
    int64_t batch_stride, group_stride, time_stride, channels_per_group;
} bc_layout;

static inline int64_t bc_offset(const bc_layout *s, int64_t b, int64_t d, int64_t t) {
    return b * s->batch_stride + (d / s->channels_per_group) * s->group_stride + t * s->time_stride;
}

/* exp(x) for the decays exp(dt A) of the inner loops, inline and branch-free so that GCC vectorises the whole n loop
 * (expf there becomes a call into glibc's vector libm per 8 lanes, which cost more than the rest of the loop).
 * exp(x) = 2^k exp(r) with k = round(x / ln 2) and r = x - k ln 2 in [-ln2/2, ln2/2]: r by two FMAs with ln 2 split
 * in a float and its remainder (fmaf, not a*b+c, so that -ffast-math cannot fold the two parts back together),
 * exp(r) by its Taylor series to r^7 (truncation < 6e-9 relative on that interval), 2^k by writing k + 127 into
 * the exponent bits. Error under 1 ulp of the exact value (0.94 at most, checked against double exp for every float
 * x in [-87.3, 88], i.e. every normal result; glibc's expf: 0.5). x is clamped to [-88, 88]: below about -87.7
 * k = -127 gives exponent bits 0, i.e. exactly 0 (results expf would give as denormals, below 1.2e-38, become 0 or
 * lose bits), and above 88 it saturates at e^88 (dt A <= 0 here, as Mamba's A = -exp(A_log) is negative).
 * Needs hardware FMA (x86-64-v3, ARMv8): elsewhere fmaf is a slow library call, so there it is plain expf. */
#ifdef __FP_FAST_FMAF
static inline float exp_fast(float x) {
    const float ln2_hi = 0.693147182464599609375f;      /* ln 2 rounded to float */
    const float ln2_lo = -1.904654323148236e-09f;       /* ln 2 - ln2_hi */
    x = fminf(fmaxf(x, -88.0f), 88.0f);
    const float k = rintf(x * 1.44269504088896341f);    /* x / ln 2, to the nearest integer */
    const float r = fmaf(-k, ln2_lo, fmaf(-k, ln2_hi, x));
    float p = 1.0f / 5040;                               /* Horner: sum r^i / i! for i = 0..7 */
    p = fmaf(p, r, 1.0f / 720);
    p = fmaf(p, r, 1.0f / 120);
    p = fmaf(p, r, 1.0f / 24);
    p = fmaf(p, r, 1.0f / 6);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    union { int32_t i; float f; } scale = {.i = ((int32_t)k + 127) << 23};   /* 2^k; k = -127 gives +0 */
    return p * scale.f;
}
#else
#define exp_fast expf
#endif

static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }   /* torch's threshold 20 */
static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* dt and the gate's sigmoid for the steps [t0, t0 + n) of a row, in loops of their own so that the compiler
 * vectorises expf/log1pf (called once per step inside the scan loop they would run scalar, costing as much as the
 * scan's N states). */
static void chunk_prologue(const float *restrict delta_row, const float *restrict z_row, float bias,
                           int64_t delta_softplus, int64_t t0, int64_t n,
                           float *restrict dts, float *restrict raws, float *restrict z_sig) {
    for (int64_t j = 0; j < n; ++j) raws[j] = delta_row[t0 + j] + bias;
    if (delta_softplus)
        for (int64_t j = 0; j < n; ++j) dts[j] = softplus(raws[j]);
    else
        for (int64_t j = 0; j < n; ++j) dts[j] = raws[j];
    if (z_row)
        for (int64_t j = 0; j < n; ++j) z_sig[j] = sigmoid(z_row[t0 + j]);
}

void selective_scan_forward(const float *restrict delta, const float *restrict u, const float *restrict A,
                            const float *restrict B, const float *restrict C,
                            int64_t B_batch_stride, int64_t B_group_stride, int64_t B_time_stride, int64_t B_group,
                            int64_t C_batch_stride, int64_t C_group_stride, int64_t C_time_stride, int64_t C_group,
                            const float *restrict delta_bias, int64_t delta_softplus, const float *restrict D,
                            const float *restrict z, const float *restrict h0, const uint8_t *restrict restart,
                            float *restrict out, float *restrict checkpoints, float *restrict last,
                            int64_t dim, int64_t length, int64_t row_begin, int64_t row_end) {
    const bc_layout sb = {B_batch_stride, B_group_stride, B_time_stride, B_group};
    const bc_layout sc = {C_batch_stride, C_group_stride, C_time_stride, C_group};
    const int64_t n_chunks = (length + CHUNK - 1) / CHUNK;
    for (int64_t r = row_begin; r < row_end; ++r) {
        const int64_t b = r / dim, d = r % dim;
        const float *a_row = A + d * NSTATE;
        const float *delta_row = delta + r * length, *u_row = u + r * length, *z_row = z ? z + r * length : 0;
        const float bias = delta_bias ? delta_bias[d] : 0.0f, skip = D ? D[d] : 0.0f;
        float *out_row = out + r * length;
        float h[NSTATE];
        for (int n = 0; n < NSTATE; ++n) h[n] = h0 ? h0[r * NSTATE + n] : 0.0f;
        float dts[CHUNK], raws[CHUNK], z_sig[CHUNK];
        /* chunk by chunk, so that the step loop has no call in it: then GCC keeps h in vector registers across the
         * steps instead of storing and reloading it every step (that store-to-load latency bounded the loop) */
        for (int64_t t0 = 0; t0 < length; t0 += CHUNK) {
            const int64_t t1 = t0 + CHUNK < length ? t0 + CHUNK : length;
            memcpy(checkpoints + (r * n_chunks + t0 / CHUNK) * NSTATE, h, sizeof h);
            chunk_prologue(delta_row, z_row, bias, delta_softplus, t0, t1 - t0, dts, raws, z_sig);
            for (int64_t t = t0; t < t1; ++t) {
                const float dt = dts[t - t0];
                const float dtu = dt * u_row[t];
                const float *b_t = B + bc_offset(&sb, b, d, t), *c_t = C + bc_offset(&sc, b, d, t);
                if (restart && restart[b * length + t])   /* a document starts: nothing of the previous one decays in */
                    for (int n = 0; n < NSTATE; ++n) h[n] = 0.0f;
                float acc = 0.0f;
                for (int n = 0; n < NSTATE; ++n) {
                    h[n] = exp_fast(dt * a_row[n]) * h[n] + dtu * b_t[n];
                    acc += c_t[n] * h[n];
                }
                const float y = acc + skip * u_row[t];
                out_row[t] = z_row ? y * z_row[t] * z_sig[t - t0] : y;
            }
        }
        memcpy(last + r * NSTATE, h, sizeof h);
    }
}

/* Gradients, with g_t = dL/dh_t (g after the last step = d_last) and dy_t = d_out_t silu(z_t) (the gradient of y_t):
 *   g_t      = dy_t C_t + exp(dt_{t+1} A) g_{t+1}
 *   d_C_t   += dy_t h_t                d_B_t += g_t dt_t u_t               (summed over the group's channels)
 *   d_u_t    = dt_t sum_n g_t B_t + D dy_t                d_D += dy_t u_t
 *   d_dt_t   = u_t sum_n g_t B_t + sum_n q_t A, with q_t = g_t exp(dt_t A) h_{t-1} (the gradient of dt_t A)
 *   d_delta_t = d_dt_t softplus'(delta_t + bias)          d_delta_bias += d_delta_t
 *   d_z_t    = d_out_t y_t silu'(z_t)                      d_A += sum_t q_t dt_t      d_h0 = exp(dt_0 A) g_0
 * d_A, d_B, d_C are accumulated (+=) into the caller's zeroed per-task buffers; the rest are written.
 */
void selective_scan_backward(const float *restrict delta, const float *restrict u, const float *restrict A,
                             const float *restrict B, const float *restrict C,
                             int64_t B_batch_stride, int64_t B_group_stride, int64_t B_time_stride, int64_t B_group,
                             int64_t C_batch_stride, int64_t C_group_stride, int64_t C_time_stride, int64_t C_group,
                             const float *restrict delta_bias, int64_t delta_softplus, const float *restrict D,
                             const float *restrict z, const uint8_t *restrict restart,
                             const float *restrict checkpoints,
                             const float *restrict d_out, const float *restrict d_last,
                             float *restrict d_delta, float *restrict d_u, float *restrict d_z,
                             float *restrict d_delta_bias_rows, float *restrict d_D_rows,
                             float *restrict d_A, float *restrict d_B, float *restrict d_C, float *restrict d_h0,
                             int64_t dim, int64_t length, int64_t row_begin, int64_t row_end) {
    const bc_layout sb = {B_batch_stride, B_group_stride, B_time_stride, B_group};
    const bc_layout sc = {C_batch_stride, C_group_stride, C_time_stride, C_group};
    const int64_t n_chunks = (length + CHUNK - 1) / CHUNK;
    /* for the chunk's steps t0 + j: states[j] = h_{t-1}, states[j + 1] = h_t (stored rather than recomputed in the
     * reverse loop: one multiply-add less there, and fewer live registers), decay[j] = exp(dt_t A) */
    float states[CHUNK + 1][NSTATE], decay[CHUNK][NSTATE];
    for (int64_t r = row_begin; r < row_end; ++r) {
        const int64_t b = r / dim, d = r % dim;
        const float *a_row = A + d * NSTATE;
        const float *delta_row = delta + r * length, *u_row = u + r * length, *d_out_row = d_out + r * length;
        const float *z_row = z ? z + r * length : 0;
        const float bias = delta_bias ? delta_bias[d] : 0.0f, skip = D ? D[d] : 0.0f;
        float *d_delta_row = d_delta + r * length, *d_u_row = d_u + r * length, *d_a_row = d_A + d * NSTATE;
        float *d_z_row = z ? d_z + r * length : 0;
        float g[NSTATE], d_a[NSTATE], d_bias_sum = 0.0f, d_skip_sum = 0.0f;
        for (int n = 0; n < NSTATE; ++n) {
            g[n] = d_last ? d_last[r * NSTATE + n] : 0.0f;
            d_a[n] = 0.0f;
        }
        for (int64_t k = n_chunks - 1; k >= 0; --k) {
            const int64_t t0 = k * CHUNK, t1 = t0 + CHUNK < length ? t0 + CHUNK : length;
            float dts[CHUNK], raws[CHUNK], z_sig[CHUNK], d_softplus[CHUNK];
            memcpy(states[0], checkpoints + (r * n_chunks + k) * NSTATE, sizeof states[0]);
            chunk_prologue(delta_row, z_row, bias, delta_softplus, t0, t1 - t0, dts, raws, z_sig);
            if (delta_softplus)   /* softplus'(x) = sigmoid(x), and 1 above the threshold */
                for (int64_t j = 0; j < t1 - t0; ++j) d_softplus[j] = raws[j] > 20.0f ? 1.0f : sigmoid(raws[j]);
            for (int64_t t = t0; t < t1; ++t) {
                const float dt = dts[t - t0];
                const float dtu = dt * u_row[t];
                const float *b_t = B + bc_offset(&sb, b, d, t);
                const float *hp = states[t - t0];
                float *h = states[t - t0 + 1], *dc = decay[t - t0];
                /* a zero decay into a document's first step also stops g and q there (no gradient crosses it) */
                const float keep = restart && restart[b * length + t] ? 0.0f : 1.0f;
                for (int n = 0; n < NSTATE; ++n) {
                    dc[n] = keep * exp_fast(dt * a_row[n]);
                    h[n] = dc[n] * hp[n] + dtu * b_t[n];
                }
            }
            for (int64_t t = t1 - 1; t >= t0; --t) {
                const float dt = dts[t - t0];
                const float ut = u_row[t], dtu = dt * ut;
                const float zt = z_row ? z_row[t] : 0.0f, gate_sig = z_row ? z_sig[t - t0] : 1.0f;
                const float dyt = z_row ? d_out_row[t] * zt * gate_sig : d_out_row[t];
                const int64_t ob = bc_offset(&sb, b, d, t), oc = bc_offset(&sc, b, d, t);
                const float *b_t = B + ob, *c_t = C + oc;
                float *db_t = d_B + ob, *dc_t = d_C + oc;
                const float *hp = states[t - t0], *h = states[t - t0 + 1], *dc = decay[t - t0];
                float g_dot_b = 0.0f, q_dot_a = 0.0f, acc = 0.0f;
                for (int n = 0; n < NSTATE; ++n) {
                    const float h_t = h[n];
                    const float g_t = g[n] + dyt * c_t[n];
                    const float q = g_t * dc[n] * hp[n];
                    acc += c_t[n] * h_t;
                    dc_t[n] += dyt * h_t;
                    db_t[n] += g_t * dtu;
                    g_dot_b += g_t * b_t[n];
                    q_dot_a += q * a_row[n];
                    d_a[n] += q * dt;
                    g[n] = g_t * dc[n];
                }
                if (z_row) {
                    const float y = acc + skip * ut;
                    d_z_row[t] = d_out_row[t] * y * gate_sig * (1.0f + zt * (1.0f - gate_sig));
                }
                d_u_row[t] = dt * g_dot_b + skip * dyt;
                d_skip_sum += dyt * ut;
                const float d_dt = ut * g_dot_b + q_dot_a;
                const float d_raw = delta_softplus ? d_dt * d_softplus[t - t0] : d_dt;
                d_delta_row[t] = d_raw;
                d_bias_sum += d_raw;
            }
        }
        for (int n = 0; n < NSTATE; ++n) {
            d_a_row[n] += d_a[n];
            if (d_h0) d_h0[r * NSTATE + n] = g[n];
        }
        if (d_delta_bias_rows) d_delta_bias_rows[r] = d_bias_sum;
        if (d_D_rows) d_D_rows[r] = d_skip_sum;
    }
}
