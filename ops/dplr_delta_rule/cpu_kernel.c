/* The DPLR delta rule on CPU: the recurrence of ops/dplr_delta_rule/reference.py one step at a time, per (batch,
 * head) row, its (K, V) state kept in a small buffer that stays in cache:
 *
 *     u_t = a_t S_{t-1},   S_t = diag(w_t) S_{t-1} + b_t^T u_t + k_t^T v_t,   o_t = scale * q_t S_t
 *
 * with w = exp(gk), the decay factors, computed by the caller (one vectorised exp over the whole tensor; a libm
 * exp per key channel and step in here, four times over with the backward's recompute, was about a quarter of the
 * op's time).
 *
 * Forward: one pass over the steps; the state entering every CHUNK-th step is saved (checkpoints) for the backward.
 * Backward: chunks in reverse; each chunk's states are recomputed from its checkpoint, then its steps run in
 * reverse with dS = dL/dS_t:
 *     dS += scale q_t^T do_t;  dq_t = scale do_t S_t^T;  dk_t = dS v_t^T;  dv_t = k_t dS;  db_t = dS u_t^T;
 *     du_t = b_t dS;  dgk_t = w_t * rowsum(dS * S_{t-1});  da_t = du_t S_{t-1}^T;
 *     dS <- diag(w_t) dS + a_t^T du_t   (the gradient reaching S_{t-1})
 * Every inner loop runs over V contiguous numbers (GCC vectorises them; sums over V are reductions, which
 * -ffast-math lets it reorder).
 *
 * REAL is float or double (a -D define: one library per dtype). Layouts (C-contiguous): q, k, a, b, w, dq, dk,
 * da, db, dgk (B, T, H, K); v, o, d_o, dv (B, T, H, V); h0, final, d_final, dh0 (B, H, K, V), each may be NULL
 * (h0: zeros; d_final: no gradient from the final state; dh0: not wanted); checkpoints (B, H, N, K, V) with
 * N = ceil(T / chunk), NULL in the forward when no backward follows. Rows (b * H + h) in [row_begin, row_end) are done by one call. work is the caller's
 * scratch: forward K * V + V numbers, backward (chunk + 1) * K * V + chunk * V + K * V + 2 * V.
 */
#include <stdint.h>
#include <string.h>

#ifndef REAL
#define REAL float
#endif
typedef REAL real;

#define INLINE static inline __attribute__((always_inline))

INLINE void forward_rows(const real *restrict q, const real *restrict k, const real *restrict v,
                         const real *restrict a, const real *restrict b, const real *restrict w,
                         const real *restrict h0, int64_t T, int64_t H, int64_t K, int64_t V, real scale,
                         int64_t chunk, real *restrict o, real *restrict checkpoints, real *restrict final,
                         real *restrict work, int64_t row_begin, int64_t row_end) {
    const int64_t N = (T + chunk - 1) / chunk;
    real *restrict S = work, *restrict u = work + K * V;
    for (int64_t row = row_begin; row < row_end; row++) {
        const int64_t bi = row / H, h = row % H;
        if (h0) memcpy(S, h0 + row * K * V, sizeof(real) * K * V);
        else memset(S, 0, sizeof(real) * K * V);
        for (int64_t t = 0; t < T; t++) {
            if (checkpoints && t % chunk == 0) memcpy(checkpoints + (row * N + t / chunk) * K * V, S, sizeof(real) * K * V);
            const int64_t xk = ((bi * T + t) * H + h) * K, xv = ((bi * T + t) * H + h) * V;
            const real *restrict qt = q + xk, *restrict kt = k + xk, *restrict at = a + xk, *restrict bt = b + xk;
            const real *restrict vt = v + xv;
            real *restrict ot = o + xv;
            memset(u, 0, sizeof(real) * V);
            for (int64_t i = 0; i < K; i++) {
                const real *restrict Si = S + i * V;
                const real ai = at[i];
                for (int64_t j = 0; j < V; j++) u[j] += ai * Si[j];
            }
            memset(ot, 0, sizeof(real) * V);
            for (int64_t i = 0; i < K; i++) {
                real *restrict Si = S + i * V;
                const real di = w[xk + i], bi_ = bt[i], ki = kt[i], qi = scale * qt[i];
                for (int64_t j = 0; j < V; j++) {
                    const real s = di * Si[j] + bi_ * u[j] + ki * vt[j];
                    Si[j] = s;
                    ot[j] += qi * s;
                }
            }
        }
        if (final) memcpy(final + row * K * V, S, sizeof(real) * K * V);
    }
}

INLINE void backward_rows(const real *restrict q, const real *restrict k, const real *restrict v,
                          const real *restrict a, const real *restrict b, const real *restrict w,
                          const real *restrict checkpoints, const real *restrict d_o, const real *restrict d_final,
                          int64_t T, int64_t H, int64_t K, int64_t V, real scale, int64_t chunk,
                          real *restrict dq, real *restrict dk, real *restrict dv, real *restrict da,
                          real *restrict db, real *restrict dgk, real *restrict dh0, real *restrict work,
                          int64_t row_begin, int64_t row_end) {
    const int64_t N = (T + chunk - 1) / chunk;
    real *restrict states = work;                            /* (chunk + 1, K, V): S before the chunk, then each S_t */
    real *restrict us = states + (chunk + 1) * K * V;        /* (chunk, V): the reads u_t */
    real *restrict dS = us + chunk * V;                      /* (K, V) */
    real *restrict du = dS + K * V, *restrict dvt = du + V;  /* (V) each */
    for (int64_t row = row_begin; row < row_end; row++) {
        const int64_t bi = row / H, h = row % H;
        if (d_final) memcpy(dS, d_final + row * K * V, sizeof(real) * K * V);
        else memset(dS, 0, sizeof(real) * K * V);
        for (int64_t n = N - 1; n >= 0; n--) {
            const int64_t start = n * chunk, len = (T - start < chunk) ? T - start : chunk;
            memcpy(states, checkpoints + (row * N + n) * K * V, sizeof(real) * K * V);
            for (int64_t s = 0; s < len; s++) {      /* recompute the chunk's states and reads */
                const int64_t xk = ((bi * T + start + s) * H + h) * K, xv = ((bi * T + start + s) * H + h) * V;
                const real *restrict Sp = states + s * K * V;
                real *restrict Sn = states + (s + 1) * K * V, *restrict u = us + s * V;
                memset(u, 0, sizeof(real) * V);
                for (int64_t i = 0; i < K; i++) {
                    const real ai = a[xk + i];
                    for (int64_t j = 0; j < V; j++) u[j] += ai * Sp[i * V + j];
                }
                for (int64_t i = 0; i < K; i++) {
                    const real di = w[xk + i], bi_ = b[xk + i], ki = k[xk + i];
                    for (int64_t j = 0; j < V; j++) Sn[i * V + j] = di * Sp[i * V + j] + bi_ * u[j] + ki * v[xv + j];
                }
            }
            for (int64_t s = len - 1; s >= 0; s--) {
                const int64_t xk = ((bi * T + start + s) * H + h) * K, xv = ((bi * T + start + s) * H + h) * V;
                const real *restrict St = states + (s + 1) * K * V, *restrict Sp = states + s * K * V;
                const real *restrict u = us + s * V, *restrict dot = d_o + xv, *restrict vt = v + xv;
                memset(du, 0, sizeof(real) * V);
                memset(dvt, 0, sizeof(real) * V);
                for (int64_t i = 0; i < K; i++) {
                    real *restrict dSi = dS + i * V;
                    const real *restrict Sti = St + i * V;
                    const real qi = scale * q[xk + i], bi_ = b[xk + i], ki = k[xk + i];
                    real dq_i = 0, dk_i = 0, db_i = 0;
                    for (int64_t j = 0; j < V; j++) {
                        const real g = dSi[j] + qi * dot[j];
                        dSi[j] = g;
                        dq_i += dot[j] * Sti[j];
                        dk_i += g * vt[j];
                        db_i += g * u[j];
                        du[j] += bi_ * g;
                        dvt[j] += ki * g;
                    }
                    dq[xk + i] = scale * dq_i;
                    dk[xk + i] = dk_i;
                    db[xk + i] = db_i;
                }
                memcpy(dv + xv, dvt, sizeof(real) * V);
                for (int64_t i = 0; i < K; i++) {
                    real *restrict dSi = dS + i * V;
                    const real *restrict Spi = Sp + i * V;
                    const real di = w[xk + i], ai = a[xk + i];
                    real dg_i = 0, da_i = 0;
                    for (int64_t j = 0; j < V; j++) {
                        dg_i += dSi[j] * Spi[j];
                        da_i += du[j] * Spi[j];
                        dSi[j] = di * dSi[j] + ai * du[j];
                    }
                    dgk[xk + i] = di * dg_i;
                    da[xk + i] = da_i;
                }
            }
        }
        if (dh0) memcpy(dh0 + row * K * V, dS, sizeof(real) * K * V);
    }
}

/* The common head sizes get their own copies with V a constant: GCC then unrolls the loops over V into whole
 * vector registers, no remainder loops (about a fifth off the op's time at V = 32, a rough check under load);
 * other sizes run the generic copy. */
#define FORWARD_ARGS q, k, v, a, b, w, h0, T, H, K
#define FORWARD_REST scale, chunk, o, checkpoints, final, work, row_begin, row_end
void dplr_forward(const real *restrict q, const real *restrict k, const real *restrict v, const real *restrict a,
                  const real *restrict b, const real *restrict w, const real *restrict h0,
                  int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, real scale, int64_t chunk,
                  real *restrict o, real *restrict checkpoints, real *restrict final, real *restrict work,
                  int64_t row_begin, int64_t row_end) {
    (void)B;
    switch (V) {
    case 16: forward_rows(FORWARD_ARGS, 16, FORWARD_REST); break;
    case 32: forward_rows(FORWARD_ARGS, 32, FORWARD_REST); break;
    case 64: forward_rows(FORWARD_ARGS, 64, FORWARD_REST); break;
    default: forward_rows(FORWARD_ARGS, V, FORWARD_REST);
    }
}

#define BACKWARD_ARGS q, k, v, a, b, w, checkpoints, d_o, d_final, T, H, K
#define BACKWARD_REST scale, chunk, dq, dk, dv, da, db, dgk, dh0, work, row_begin, row_end
void dplr_backward(const real *restrict q, const real *restrict k, const real *restrict v, const real *restrict a,
                   const real *restrict b, const real *restrict w, const real *restrict checkpoints,
                   const real *restrict d_o, const real *restrict d_final,
                   int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, real scale, int64_t chunk,
                   real *restrict dq, real *restrict dk, real *restrict dv, real *restrict da, real *restrict db,
                   real *restrict dgk, real *restrict dh0, real *restrict work, int64_t row_begin, int64_t row_end) {
    (void)B;
    switch (V) {
    case 16: backward_rows(BACKWARD_ARGS, 16, BACKWARD_REST); break;
    case 32: backward_rows(BACKWARD_ARGS, 32, BACKWARD_REST); break;
    case 64: backward_rows(BACKWARD_ARGS, 64, BACKWARD_REST); break;
    default: backward_rows(BACKWARD_ARGS, V, BACKWARD_REST);
    }
}
