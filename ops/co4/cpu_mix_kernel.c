/* Co4's running top-k and its small attention, fused, on CPU: per token, the insertion of ops/co4/cpu_kernel.c
 * into the three tables (M_Q, M_K, M_V), then per head the softmax attention over the L latent rows and the filled
 * top-k rows, reading only what the block reads: each channel's output of the row of its own rank in M_V's table
 * (0 when the token is not in it) plus, with ``latent_mean``, the output of the latent rows' mean attention weights.
 * zoo/blocks/co4.py (``_running_topk`` then ``_attend``) is the definition; nothing of size (T, k, D) is stored.
 *
 * One entry point does both directions. Forward (dy == NULL): writes y (B, T, D) and the tables after the last
 * token. Backward (dy != NULL): sweeps the tokens again (recomputing the tables, which carry the gradients, and
 * each token's attention weights unless the forward saved them) and accumulates the gradients: each table row's
 * gradient goes to the token that filled it (rows from the initial table get none: it is a cache, never
 * differentiated), the latent rows' to d_lq/d_lk/d_lv.
 * weights (B, T * H * (L + k)^2) or NULL: the forward writes there each used query row's softmax weights (its
 * n = L + filled rows, in the order it computes them), and the backward reads them back instead of recomputing the
 * scores and the softmax (the same numbers, bit for bit); NULL recomputes them.
 *
 * Layouts (C-contiguous, REAL is float or double, chosen at build time): m_q, m_k, m_v, y, dy, d_mq, d_mk, d_mv
 * (B, T, D); latent rows lq, lk, lv (B, T, L, D) when lat_per_token, else (L, D) shared by every token, their
 * gradients the same shape (written when per token; else accumulated, zero-filled by the caller, as are d_m*); initial (3, B, k, D) with initial_count filled
 * rows or NULL; last (3, B, k, D) or NULL: the tables after the last token (rows past the count left as they are).
 * Prefix latents instead (lat_p != NULL; lq, lk, lv unused): lat_p (B, T, 3D) the tokens' projections without the
 * bias, lat_w (B, T, L) the read weights, lat_base (L, 3D) the latent tokens' q|k|v, as cpu_latent_kernel.c takes
 * them; their gradients d_p, d_w, d_base alike, zero-filled by the caller.
 * Ranking as cpu_kernel.c: the value rounded to bfloat16, ties to the earlier entry.
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
#define EXP(x) (sizeof(real) == sizeof(float) ? (real)expf((float)(x)) : (real)exp((double)(x)))

static inline float bf16_round(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* Insert token x (D values, source t) into a sorted table of `count` filled rows; see cpu_kernel.c. In the backward
 * each entry carries the gradient gathered so far (grad, k x D, or NULL): it moves with the entry, and is paid to the
 * entry's token (d_m, this batch row's (T, D) gradient) when the entry drops out of the table; the rest at the end. */
static inline __attribute__((always_inline)) void insert(real *restrict val, float *restrict key,
        int32_t *restrict src, real *restrict grad, real *restrict d_m, const real *restrict x,
        const float *restrict x_key, int32_t new_src, int64_t count, int64_t k, int64_t D) {
    if (grad && count == k) {  /* full: the last row's entry drops out where x ranks above it */
        const float *restrict lkey = key + (k - 1) * D;
        const int32_t *restrict lsrc = src + (k - 1) * D;
        const real *restrict lgrad = grad + (k - 1) * D;
        for (int64_t c0 = 0; c0 < D; c0 += 64) {  /* the paying channels as bits, then one add per set bit */
            const int64_t m = D - c0 < 64 ? D - c0 : 64;
            uint64_t bits = 0;
            for (int64_t c = 0; c < m; c++)
                bits |= (uint64_t)(lkey[c0 + c] < x_key[c0 + c] && lsrc[c0 + c] >= 0) << c;
            for (; bits; bits &= bits - 1) {
                const int64_t c = c0 + __builtin_ctzll(bits);
                d_m[lsrc[c] * D + c] += lgrad[c];
            }
        }
    }
    const int64_t last = count < k ? count : k - 1;
    for (int64_t r = last; r >= 0; r--) {
        real *restrict row = val + r * D;
        float *restrict rkey = key + r * D;
        int32_t *restrict rsrc = src + r * D;
        const real *above = r > 0 ? row - D : x;
        const float *above_key = r > 0 ? rkey - D : x_key;
        const int32_t *above_src = r > 0 ? rsrc - D : rsrc;
        const int filled = r < count, top_row = r == 0;
        if (grad) {  /* the same moves, for the carried gradients (x enters with none) */
            real *restrict rgrad = grad + r * D;
            const real *above_grad = r > 0 ? rgrad - D : rgrad;
            for (int64_t c = 0; c < D; c++) {
                const int keep = filled && rkey[c] >= x_key[c];
                const int take_x = top_row || above_key[c] >= x_key[c];
                rgrad[c] = keep ? rgrad[c] : (take_x ? 0 : above_grad[c]);
            }
        }
        for (int64_t c = 0; c < D; c++) {
            const int keep = filled && rkey[c] >= x_key[c];
            const int take_x = top_row || above_key[c] >= x_key[c];
            const real moved = take_x ? x[c] : above[c];
            const float moved_key = take_x ? x_key[c] : above_key[c];
            const int32_t moved_src = take_x ? new_src : above_src[c];
            rsrc[c] = keep ? rsrc[c] : moved_src;
            row[c] = keep ? row[c] : moved;
            rkey[c] = keep ? rkey[c] : moved_key;
        }
    }
}

/* In whole 64-byte vectors (GCC's vector extension) where n allows: a loop over rows j of dot(., row j) is then
 * left alone by the loop vectoriser, which otherwise vectorises across the rows with gathers (slower here) */
typedef real vreal __attribute__((vector_size(64)));
#define VLEN ((int64_t)(64 / sizeof(real)))

static inline __attribute__((always_inline)) real dot(const real *restrict a, const real *restrict b, int64_t n) {
    real s = 0;
    if (n % VLEN == 0) {
        vreal acc = {0};
        for (int64_t e = 0; e < n; e += VLEN) {
            vreal x, y;
            memcpy(&x, a + e, sizeof x);
            memcpy(&y, b + e, sizeof y);
            acc += x * y;
        }
        for (int64_t i = 0; i < VLEN; i++) s += acc[i];
        return s;
    }
    for (int64_t e = 0; e < n; e++) s += a[e] * b[e];
    return s;
}

static inline __attribute__((always_inline)) void axpy(real *restrict out, real a, const real *restrict x, int64_t n) {
    if (n % VLEN == 0) {  /* vectors, as dot */
        for (int64_t e = 0; e < n; e += VLEN) {
            vreal o, v;
            memcpy(&o, out + e, sizeof o);
            memcpy(&v, x + e, sizeof v);
            o += a * v;
            memcpy(out + e, &o, sizeof o);
        }
        return;
    }
    for (int64_t e = 0; e < n; e++) out[e] += a * x[e];
}

#define MIX_ARGS const real *m_q, const real *m_k, const real *m_v, const real *lq, const real *lk, const real *lv, \
    int64_t lat_per_token, const real *initial, int64_t initial_count, int64_t B, int64_t T, int64_t D, int64_t L, \
    int64_t k, int64_t H, double scale_d, int64_t latent_mean, real *y, real *last, const real *dy, real *d_mq, \
    real *d_mk, real *d_mv, real *d_lq, real *d_lk, real *d_lv, const real *lat_p, const real *lat_w, \
    const real *lat_base, real *d_p, real *d_w, real *d_base, real *weights
#define MIX_NAMES m_q, m_k, m_v, lq, lk, lv, lat_per_token, initial, initial_count, B, T, D, L, k, H, scale_d, \
    latent_mean, y, last, dy, d_mq, d_mk, d_mv, d_lq, d_lk, d_lv, lat_p, lat_w, lat_base, d_p, d_w, d_base, weights

/* the body, inlined once per common head size: with E a constant the short dot products and axpys unroll */
static inline __attribute__((always_inline)) int mix_body(MIX_ARGS, const int64_t E) {
    const real scale = (real)scale_d;
    const int64_t R = L + k, backward = dy != NULL;
    const int64_t NP = (R + 15) & ~(int64_t)15;  /* weight rows padded to whole vectors: no scalar exp tail */
    const real *m[3] = {m_q, m_k, m_v};
    real *d_m[3] = {d_mq, d_mk, d_mv};
    /* scratch: the three tables, the token's keys and ranks, per-head rows and their weights/gradients */
    size_t bytes = 3 * k * D * (sizeof(real) + sizeof(float) + sizeof(int32_t)) + D * (sizeof(float) + sizeof(int64_t))
                   + (size_t)(3 * k * D + 2 * R * NP + 6 * R * E + 2 * NP) * sizeof(real);
    char *mem = malloc(bytes);
    if (!mem) return 1;
    /* int64 first, then reals, then 4-byte types: every part stays aligned */
    int64_t *rank = (int64_t *)mem;
    real *tval = (real *)(rank + D);
    real *tgrad = tval + 3 * k * D;        /* (3, k, D) the gradient each table entry carries (backward) */
    real *P = tgrad + 3 * k * D;           /* (R, NP) attention weights of the used query rows */
    real *dP = P + R * NP;                 /* (R, NP) their gradients */
    real *dQ = dP + R * NP, *dK = dQ + R * E, *dV = dK + R * E;   /* (R, E) each */
    real *Qh = dV + R * E, *Kh = Qh + R * E, *Vh = Kh + R * E;  /* (R, E) one head's rows */
    real *pbar = Vh + R * E;            /* (R) the latent rows' mean weights */
    real *dpbar = pbar + NP;
    float *tkey = (float *)(dpbar + NP);
    float *x_key = tkey + 3 * k * D;
    int32_t *tsrc = (int32_t *)(x_key + D);
    char used_rows[4096];
    if (R > 4096) { free(mem); return 2; }
    /* prefix latents (lat_p != NULL): each batch row's running sums S (L, 3D), N (L) give the rows of every token
     * here (as cpu_latent_kernel.c), so no (B, T, L, D) rows are stored or read; the backward then also runs that
     * kernel's backward for the rows' gradients (see there): dS, dN per token in `scratch`, then a reverse sweep */
    const int64_t prefix = lat_p != NULL, W = 3 * D;
    real *S = NULL, *N = NULL, *lrows = NULL, *G = NULL, *inv = NULL, *scratch = NULL;
    if (prefix) {
        S = malloc((size_t)(3 * L * W + 2 * L + (backward ? T * L * (W + 1) : 0)) * sizeof(real));
        if (!S) { free(mem); return 1; }
        N = S + L * W, lrows = N + L, G = lrows + L * W, inv = G + L * W, scratch = inv + L;
    }

    for (int64_t b = 0; b < B; b++) {
        int64_t count = initial_count;
        real *saved = weights ? weights + b * T * H * R * R : NULL;  /* this batch row's weights, used rows only */
        if (backward) memset(tgrad, 0, 3 * k * D * sizeof(real));
        if (prefix) memset(S, 0, (size_t)(L * W + L) * sizeof(real));
        for (int s = 0; s < 3; s++) {
            for (int64_t r = 0; r < count; r++) {
                const real *row = initial + ((s * B + b) * k + r) * D;
                memcpy(tval + (s * k + r) * D, row, D * sizeof(real));
                for (int64_t c = 0; c < D; c++) {
                    tkey[(s * k + r) * D + c] = bf16_round((float)row[c]);
                    tsrc[(s * k + r) * D + c] = -1;  /* from the cache: no gradient */
                }
            }
        }
        for (int64_t t = 0; t < T; t++) {
            for (int s = 0; s < 3; s++) {
                const real *x = m[s] + (b * T + t) * D;
                for (int64_t c = 0; c < D; c++) x_key[c] = bf16_round((float)x[c]);
                if (s == 2) {  /* the token's own rank in M_V's table */
                    for (int64_t c = 0; c < D; c++) rank[c] = 0;
                    for (int64_t r = 0; r < count; r++)
                        for (int64_t c = 0; c < D; c++) rank[c] += tkey[(s * k + r) * D + c] >= x_key[c];
                    for (int64_t c = 0; c < D; c++) rank[c] = rank[c] < k ? rank[c] : k;
                }
                insert(tval + s * k * D, tkey + s * k * D, tsrc + s * k * D, backward ? tgrad + s * k * D : NULL,
                       backward ? d_m[s] + b * T * D : NULL, x, x_key, (int32_t)t, count, k, D);
            }
            count = count < k ? count + 1 : k;
            const int64_t n = L + count;  /* rows: the latents, then the filled top-k rows */
            const int64_t lat_off = lat_per_token ? (b * T + t) * L * D : 0;
            const real *tok_dy = backward ? dy + (b * T + t) * D : NULL;
            const real *lat_rows[3] = {lq + lat_off, lk + lat_off, lv + lat_off};  /* row i at + i * lat_stride */
            int64_t lat_stride = D;
            if (prefix) {
                const real *pt = lat_p + (b * T + t) * W, *wt = lat_w + (b * T + t) * L;
                for (int64_t l = 0; l < L; l++) {
                    real *sl = S + l * W, *row = lrows + l * W;
                    const real *bl = lat_base + l * W;
                    for (int64_t c = 0; c < W; c++) sl[c] += wt[l] * pt[c];
                    N[l] += wt[l];
                    inv[l] = (real)1 / (N[l] < TINY ? TINY : N[l]);
                    for (int64_t c = 0; c < W; c++) row[c] = bl[c] + sl[c] * inv[l];
                }
                for (int s = 0; s < 3; s++) lat_rows[s] = lrows + s * D;
                lat_stride = W;
            }
            for (int64_t h = 0; h < H; h++) {
                const int64_t c0 = h * E;
                /* this head's rows, copied to contiguous (n, E) blocks: fixed strides keep the loops below simple
                 * to vectorise (through row pointers GCC gathers across rows instead) */
                for (int64_t i = 0; i < L; i++) {
                    memcpy(Qh + i * E, lat_rows[0] + i * lat_stride + c0, E * sizeof(real));
                    memcpy(Kh + i * E, lat_rows[1] + i * lat_stride + c0, E * sizeof(real));
                    memcpy(Vh + i * E, lat_rows[2] + i * lat_stride + c0, E * sizeof(real));
                }
                for (int64_t r = 0; r < count; r++) {
                    memcpy(Qh + (L + r) * E, tval + (0 * k + r) * D + c0, E * sizeof(real));
                    memcpy(Kh + (L + r) * E, tval + (1 * k + r) * D + c0, E * sizeof(real));
                    memcpy(Vh + (L + r) * E, tval + (2 * k + r) * D + c0, E * sizeof(real));
                }
                /* query rows read: the latents (for their mean) and the rows some channel of this head ranks at */
                for (int64_t i = 0; i < n; i++) used_rows[i] = i < L ? (char)latent_mean : 0;
                for (int64_t e = 0; e < E; e++)
                    if (rank[c0 + e] < k) used_rows[L + rank[c0 + e]] = 1;
                for (int64_t i = 0; i < n; i++) {
                    if (!used_rows[i]) continue;
                    real *p = P + i * NP, top, sum = 0;
                    if (weights && backward) {  /* the forward's weights, in the order it wrote them */
                        memcpy(p, saved, n * sizeof(real));
                        for (int64_t j = n; j < NP; j++) p[j] = 0;
                        saved += n;
                        continue;
                    }
                    for (int64_t j = 0; j < n; j++) p[j] = dot(Qh + i * E, Kh + j * E, E) * scale;
                    top = p[0];  /* no infinities: built with -ffast-math */
                    for (int64_t j = 1; j < n; j++) top = p[j] > top ? p[j] : top;
                    for (int64_t j = n; j < NP; j++) p[j] = top;  /* padding, zeroed after the exp */
                    for (int64_t j = 0; j < NP; j++) p[j] = EXP(p[j] - top);
                    for (int64_t j = n; j < NP; j++) p[j] = 0;
                    for (int64_t j = 0; j < NP; j++) sum += p[j];
                    const real inv = 1 / sum;
                    for (int64_t j = 0; j < NP; j++) p[j] *= inv;
                    if (weights) memcpy(saved, p, n * sizeof(real)), saved += n;
                }
                if (latent_mean) {
                    for (int64_t j = 0; j < NP; j++) pbar[j] = 0;
                    for (int64_t i = 0; i < L; i++)
                        for (int64_t j = 0; j < NP; j++) pbar[j] += P[i * NP + j];
                    for (int64_t j = 0; j < NP; j++) pbar[j] *= (real)1 / (real)L;
                }
                if (!backward) {
                    real *yt = y + (b * T + t) * D + c0;
                    for (int64_t e = 0; e < E; e++) yt[e] = 0;
                    for (int64_t e = 0; e < E; e++) {  /* each channel in the table reads its own row's output */
                        const int64_t r = rank[c0 + e];
                        if (r >= k) continue;
                        const real *p = P + (L + r) * NP;
                        real acc = 0;
                        for (int64_t j = 0; j < n; j++) acc += p[j] * Vh[j * E + e];
                        yt[e] = acc;
                    }
                    if (latent_mean) {
                        real acc[E];
                        for (int64_t e = 0; e < E; e++) acc[e] = 0;
                        for (int64_t j = 0; j < n; j++) axpy(acc, pbar[j], Vh + j * E, E);
                        for (int64_t e = 0; e < E; e++) yt[e] += acc[e];
                    }
                    continue;
                }
                /* backward of this head at this token */
                const real *g = tok_dy + c0;
                for (int64_t j = 0; j < n; j++) {
                    memset(dQ + j * E, 0, E * sizeof(real));
                    memset(dK + j * E, 0, E * sizeof(real));
                    memset(dV + j * E, 0, E * sizeof(real));
                }
                /* a channel's gradient reaches only the row of its own rank: per channel in the table, n
                 * multiply-adds into that row's dP and into its own column of dV (per row, dot products and axpys
                 * over all E channels, almost all of them 0 past the first tokens) */
                for (int64_t i = L; i < n; i++)
                    if (used_rows[i]) memset(dP + i * NP, 0, n * sizeof(real));
                for (int64_t e = 0; e < E; e++) {
                    const int64_t r = rank[c0 + e];
                    if (r >= k) continue;
                    const real ge = g[e], *p = P + (L + r) * NP;
                    real *dp = dP + (L + r) * NP;
                    for (int64_t j = 0; j < n; j++) {
                        dp[j] += ge * Vh[j * E + e];
                        dV[j * E + e] += p[j] * ge;
                    }
                }
                if (latent_mean) {
                    for (int64_t j = 0; j < n; j++) {
                        dpbar[j] = dot(g, Vh + j * E, E) / (real)L;
                        axpy(dV + j * E, pbar[j], g, E);
                    }
                    for (int64_t i = 0; i < L; i++)
                        for (int64_t j = 0; j < n; j++) dP[i * NP + j] = dpbar[j];
                }
                /* softmax backward, then the scores' gradients to the query and key rows */
                for (int64_t i = 0; i < n; i++) {
                    if (!used_rows[i]) continue;
                    real *p = P + i * NP, *dp = dP + i * NP, s = 0;
                    for (int64_t j = 0; j < n; j++) s += p[j] * dp[j];
                    real acc[E];  /* in registers: accumulating in dQ itself would chain through memory */
                    for (int64_t e = 0; e < E; e++) acc[e] = 0;
                    for (int64_t j = 0; j < n; j++) {
                        const real ds = p[j] * (dp[j] - s) * scale;
                        axpy(acc, ds, Kh + j * E, E);
                        axpy(dK + j * E, ds, Qh + i * E, E);
                    }
                    memcpy(dQ + i * E, acc, E * sizeof(real));
                }
                /* latent rows' gradients */
                for (int64_t i = 0; i < L; i++) {
                    const int64_t off = lat_off + i * D + c0;
                    if (prefix) {  /* the row's gradient, for the sweeps below */
                        memcpy(G + i * W + c0, dQ + i * E, E * sizeof(real));
                        memcpy(G + i * W + D + c0, dK + i * E, E * sizeof(real));
                        memcpy(G + i * W + 2 * D + c0, dV + i * E, E * sizeof(real));
                        continue;
                    }
                    if (lat_per_token) {  /* each token's rows are visited once: written, no zero fill needed */
                        memcpy(d_lq + off, dQ + i * E, E * sizeof(real));
                        memcpy(d_lk + off, dK + i * E, E * sizeof(real));
                        memcpy(d_lv + off, dV + i * E, E * sizeof(real));
                        continue;
                    }
                    for (int64_t e = 0; e < E; e++) {
                        d_lq[off + e] += dQ[i * E + e];
                        d_lk[off + e] += dK[i * E + e];
                        d_lv[off + e] += dV[i * E + e];
                    }
                }
                /* table rows' gradients: carried by the entries until they leave (see insert) */
                const real *grads[3] = {dQ, dK, dV};
                for (int s = 0; s < 3; s++)
                    for (int64_t r = 0; r < count; r++) {
                        real *tg = tgrad + (s * k + r) * D + c0;
                        axpy(tg, 1, grads[s] + (L + r) * E, E);
                    }
            }
            if (prefix && backward)  /* the rows' gradients G: d base, and dS = G / N, dN = -G . S / N^2 */
                for (int64_t l = 0; l < L; l++) {
                    const real *gl = G + l * W, *sl = S + l * W;
                    real *dS = scratch + (t * L + l) * (W + 1), *db = d_base + l * W, gs = 0;
                    for (int64_t c = 0; c < W; c++) {
                        db[c] += gl[c];
                        dS[c] = gl[c] * inv[l];
                        gs += gl[c] * sl[c];
                    }
                    dS[W] = N[l] < TINY ? 0 : -gs * inv[l] * inv[l];
                }
        }
        if (prefix && backward) {  /* reverse sweep: R_l = sum over t' >= t of dS_l[t'] (in lrows), and of dN (in N) */
            memset(lrows, 0, (size_t)(L * W) * sizeof(real));
            memset(N, 0, (size_t)L * sizeof(real));
            for (int64_t t = T - 1; t >= 0; t--) {
                const real *pt = lat_p + (b * T + t) * W, *wt = lat_w + (b * T + t) * L;
                real *dp = d_p + (b * T + t) * W, *dw = d_w + (b * T + t) * L;
                for (int64_t l = 0; l < L; l++) {
                    real *r = lrows + l * W, dot = 0;
                    const real *dS = scratch + (t * L + l) * (W + 1);
                    for (int64_t c = 0; c < W; c++) {
                        r[c] += dS[c];
                        dp[c] += wt[l] * r[c];
                        dot += r[c] * pt[c];
                    }
                    N[l] += dS[W];
                    dw[l] = dot + N[l];
                }
            }
        }
        if (backward)  /* the entries still in the tables pay their gradients */
            for (int s = 0; s < 3; s++)
                for (int64_t i = 0; i < count * D; i++) {
                    const int32_t src = tsrc[s * k * D + i];
                    if (src >= 0) d_m[s][(b * T + src) * D + i % D] += tgrad[s * k * D + i];
                }
        if (last)
            for (int s = 0; s < 3; s++)
                memcpy(last + (s * B + b) * k * D, tval + s * k * D, count * D * sizeof(real));
    }
    free(mem);
    free(S);
    return 0;
}

int co4_mix(MIX_ARGS) {
    switch (D / H) {
        case 16: return mix_body(MIX_NAMES, 16);
        case 32: return mix_body(MIX_NAMES, 32);
        case 64: return mix_body(MIX_NAMES, 64);
        default: return mix_body(MIX_NAMES, D / H);
    }
}
