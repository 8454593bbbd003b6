/* Co4's latent rows that read the prefix, and the statistics the modulation takes from them, on CPU.
 *
 * Per batch row and latent l, running over the tokens t: S_l += w[t, l] P[t] (3D numbers), N_l += w[t, l];
 * the row is lat_l[t] = base_l + S_l / max(N_l, tiny), written as its q, k, v parts lq, lk, lv; the statistics are
 * mq[t] = mean_l lq_l[t], mk[t] = mean_l lk_l[t], cv[t] = mean_l lq_l * lk_l * (1 + |lv_l|) (channelwise).
 * zoo/blocks/co4.py (``Co4.latent_rows`` and ``Co4.modulate``) is the definition.
 *
 * Backward (d_p != NULL): a forward sweep recomputes S and N and turns the outputs' gradients into each row's
 * gradient G_l[t] (the statistics' parts included), dbase_l += G_l[t], stores dS_l[t] = G_l[t] / N and
 * dN[t, l] = -G_l[t] . S_l / N^2 in the caller's scratch; a reverse sweep sums them from the end
 * (R_l = sum over t' >= t of dS_l[t']) and gives dP[t] = sum_l w[t, l] R_l, dw[t, l] = R_l . P[t] + sum over
 * t' >= t of dN[t', l]. d_lq, d_lk, d_lv or d_mq, d_mk, d_cv may be NULL (no gradient there).
 *
 * Layouts (C-contiguous, REAL float or double at build time): P (B, T, 3D) the tokens' projections without the
 * bias; w (B, T, L); base (L, 3D); lq, lk, lv and their gradients (B, T, L, D); mq, mk, cv and theirs (B, T, D);
 * d_p (B, T, 3D), d_w (B, T, L), d_base (L, 3D) zero-filled by the caller; scratch T * L * (3D + 1) reals.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef REAL
#define REAL float
#endif
typedef REAL real;
#define TINY (sizeof(real) == sizeof(float) ? (real)FLT_MIN : (real)DBL_MIN)

/* the statistics' gradients added to one latent row's (gq, gk, gv: its q, k, v parts); a function of its own so
 * that restrict tells the compiler the pointers do not overlap (else it needs more run-time overlap tests than it
 * allows, and runs the loop scalar) */
static inline __attribute__((always_inline)) void add_stats_grad(real *restrict gq, real *restrict gk,
        real *restrict gv, const real *restrict q, const real *restrict k, const real *restrict v,
        const real *restrict d_mq, const real *restrict d_mk, const real *restrict d_cv, real inv_L, int64_t D) {
    for (int64_t c = 0; c < D; c++) {
        const real g = d_cv[c] * inv_L, mag = 1 + fabs(v[c]);
        const real sign = v[c] > 0 ? 1 : (v[c] < 0 ? -1 : 0);
        gq[c] += d_mq[c] * inv_L + g * k[c] * mag;
        gk[c] += d_mk[c] * inv_L + g * q[c] * mag;
        gv[c] += g * q[c] * k[c] * sign;
    }
}

int co4_latent(const real *P, const real *w, const real *base, int64_t B, int64_t T, int64_t D, int64_t L,
                real *lq, real *lk, real *lv, real *mq, real *mk, real *cv,
                const real *d_lq, const real *d_lk, const real *d_lv, const real *d_mq, const real *d_mk,
                const real *d_cv, real *d_p, real *d_w, real *d_base, real *scratch) {
    const int64_t W = 3 * D, backward = d_p != NULL;
    real *S = malloc((size_t)(L * W + L + 3 * W) * sizeof(real));
    if (!S) return 1;
    real *N = S + L * W, *row = N + L, *G = row + W;  /* row: one latent's q|k|v; G: its gradient */
    const real inv_L = (real)1 / (real)L;
    for (int64_t b = 0; b < B; b++) {
        memset(S, 0, (size_t)(L * W + L) * sizeof(real));
        for (int64_t t = 0; t < T; t++) {
            const real *p = P + (b * T + t) * W;
            const real *wt = w + (b * T + t) * L;
            const int64_t bt = b * T + t;
            real *o_mq = backward ? NULL : mq + bt * D, *o_mk = backward ? NULL : mk + bt * D;
            real *o_cv = backward ? NULL : cv + bt * D;
            if (!backward)
                for (int64_t c = 0; c < D; c++) o_mq[c] = o_mk[c] = o_cv[c] = 0;
            for (int64_t l = 0; l < L; l++) {
                real *s = S + l * W;
                for (int64_t c = 0; c < W; c++) s[c] += wt[l] * p[c];
                N[l] += wt[l];
                const int clamped = N[l] < TINY;
                const real inv = (real)1 / (clamped ? TINY : N[l]);
                const real *bl = base + l * W;
                for (int64_t c = 0; c < W; c++) row[c] = bl[c] + s[c] * inv;
                const real *q = row, *k = row + D, *v = row + 2 * D;
                const int64_t off = (bt * L + l) * D;
                if (!backward) {
                    if (lq) {  /* NULL: the statistics only (the mix kernel then makes the rows itself) */
                        memcpy(lq + off, q, D * sizeof(real));
                        memcpy(lk + off, k, D * sizeof(real));
                        memcpy(lv + off, v, D * sizeof(real));
                    }
                    for (int64_t c = 0; c < D; c++) {
                        o_mq[c] += q[c];
                        o_mk[c] += k[c];
                        o_cv[c] += q[c] * k[c] * (1 + fabs(v[c]));
                    }
                    continue;
                }
                for (int64_t c = 0; c < W; c++) G[c] = 0;
                if (d_lq)
                    for (int64_t c = 0; c < D; c++) {
                        G[c] = d_lq[off + c];
                        G[D + c] = d_lk[off + c];
                        G[2 * D + c] = d_lv[off + c];
                    }
                if (d_mq)
                    add_stats_grad(G, G + D, G + 2 * D, q, k, v, d_mq + bt * D, d_mk + bt * D, d_cv + bt * D,
                                   inv_L, D);
                real *dS = scratch + (t * L + l) * (W + 1), gs = 0;
                real *db = d_base + l * W;
                for (int64_t c = 0; c < W; c++) {
                    db[c] += G[c];
                    dS[c] = G[c] * inv;
                    gs += G[c] * s[c];
                }
                dS[W] = clamped ? 0 : -gs * inv * inv;  /* dN */
            }
            if (!backward)
                for (int64_t c = 0; c < D; c++) { o_mq[c] *= inv_L; o_mk[c] *= inv_L; o_cv[c] *= inv_L; }
        }
        if (!backward) continue;
        /* reverse sweep: R_l and the summed dN in S and N */
        memset(S, 0, (size_t)(L * W + L) * sizeof(real));
        for (int64_t t = T - 1; t >= 0; t--) {
            const real *p = P + (b * T + t) * W;
            const real *wt = w + (b * T + t) * L;
            real *dp = d_p + (b * T + t) * W, *dw = d_w + (b * T + t) * L;
            for (int64_t l = 0; l < L; l++) {
                real *r = S + l * W;
                const real *dS = scratch + (t * L + l) * (W + 1);
                real dot = 0;
                for (int64_t c = 0; c < W; c++) {
                    r[c] += dS[c];
                    dp[c] += wt[l] * r[c];
                    dot += r[c] * p[c];
                }
                N[l] += dS[W];
                dw[l] = dot + N[l];
            }
        }
    }
    free(S);
    return 0;
}
