/* Kernel of a blmkd C export of a byte-latent Mamba (BLM) student (``blmkd export --c``).
 *
 * The export writes one self-contained C99 file: a metadata comment, the model's sizes as macros,
 * its weights as static arrays, then this kernel. No dependencies beyond libm; build it with e.g.
 *
 *     cc -O3 -march=native -ffp-contract=fast -fno-math-errno -shared -fPIC model.c -o model.so -lm
 *
 * (blmkd does this itself, cached, to run and check the file) or compile it into firmware. Entry:
 *
 *     int blm_forward(const uint8_t *x, int n, float *logits);
 *
 * ``x`` holds ``n`` byte patches ``(BLM_BANDS, BLM_P, BLM_P)`` back to back (the data layer's per-band
 * bytes; the dequantization is folded into the first layer), ``logits`` receives ``(n, BLM_CLASSES)``.
 *
 * Layout: every activation is channel-major, ``[channels][BLM_LP]``, tokens along the fast axis and
 * padded from ``BLM_L`` to ``BLM_LP`` (a multiple of 16), so that every matmul is
 * ``Y[M][LP] = W[M][K] · X[K][LP]`` with PyTorch's ``(out, in)`` weights as they are, and every
 * elementwise or per-token step runs along contiguous, vectorizable rows. The padded tokens carry
 * finite junk that no valid token ever reads (the convolution and the scan only look back; the
 * pooling stops at ``BLM_L``).
 *
 * The selective scan runs as its recurrence (linear in L) instead of the dual matrix form the ONNX
 * graph uses; both are exact, so logits agree with PyTorch to float rounding (the export checks it).
 */

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define BLM_RESTRICT __restrict__
#else
#define BLM_RESTRICT
#endif

#define BLM_NX (BLM_HEADS + 2 * BLM_STATE) /* rows of x_proj: Δ per head, B, C */

/* exp(x) for the gates, vectorizable (no libm call, no branch): Cody-Waite reduction by ln 2 (k rounded
 * with the 1.5·2^23 trick), the Cephes degree-5 polynomial on [-ln2/2, ln2/2], 2^k through the
 * exponent bits. Relative error ~2e-7. x is clamped to [-87, 88] on its bits, as integers (sign kept,
 * magnitude min'ed): a float select `x < -87 ? -87 : x` lets GCC thread the constant through the rest of
 * the function into a second path, and under strict IEEE (-ftrapping-math, the default) it then
 * cannot merge the paths back, so no loop calling this vectorized. Integer min is branch-free on every
 * target. Written so that GCC and Clang vectorize the loops calling it at -O3 without -ffast-math
 * (memcpy, not a union). */
static inline float blm_exp(float x) {
    uint32_t xb;
    memcpy(&xb, &x, sizeof xb);
    const uint32_t sign = xb & 0x80000000u, lim = sign ? 0x42ae0000u : 0x42b00000u; /* 87.0f, 88.0f */
    uint32_t mag = xb & 0x7fffffffu;
    mag = mag < lim ? mag : lim;
    xb = sign | mag;
    memcpy(&x, &xb, sizeof x);
    float kf = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - kf * 0.693359375f + kf * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t bits = (uint32_t)((int)kf + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

static inline float blm_silu(float x) { return x / (1.0f + blm_exp(-x)); }

/* GELU with erf (PyTorch's nn.GELU default); erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7). */
static inline float blm_gelu(float x) {
    float z = x * 0.70710678118654752f;
    float a = fabsf(z);
    float t = 1.0f / (1.0f + 0.3275911f * a);
    float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    float e = 1.0f - poly * blm_exp(-a * a);
    return 0.5f * x * (1.0f + copysignf(e, z));
}

/* Y[M][LP] = W[M][K] · X[K][LP] (+ bias[M], if not null), three ways with one result per output
 * (each output summed over k in order, k = 0 first, so they differ by FMA contraction at most):
 *
 * - blm_matmul_ref: the obvious triple loop, the reference (-DBLM_REFERENCE builds the kernel on it).
 * - blm_matmul_c99: portable C99. The inner loops run along the tokens, never along K, so there is
 *   no reduction to reorder and the compiler vectorizes them under strict IEEE. Blocks of BLM_MR rows
 *   × 16 tokens whose accumulators are named arrays. Used by compilers without GNU vector extensions
 *   and by -DBLM_PORTABLE.
 * - blm_matmul_vec (GCC, Clang): the same loop on vector types of the target's width (GNU vector
 *   extensions, no ISA intrinsics), so that the accumulators are vector variables that stay in
 *   registers. GCC keeps the C99 version's float arrays on the stack on AVX2 and reloads them every
 *   FMA: blm_t batch 1, -march=x86-64-v3, 41 µs C99 against 28 µs here (benchmarks/c_kernel_timing.c,
 *   docs/edge.md). The block
 *   is sized to the register file: AVX-512 8 rows × 1 zmm (of 32), AVX2 6 rows × 2 ymm (12 of 16),
 *   NEON 4 rows × 4 q (16 of 32), other targets 2 rows × 4. */
#if defined(__AVX512F__)
#define BLM_VW 16 /* floats per vector register */
#define BLM_MR 8
#define BLM_ROWS(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7)
#elif defined(__AVX__)
#define BLM_VW 8
#define BLM_MR 6
#define BLM_ROWS(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5)
#elif defined(__ARM_NEON) || defined(__aarch64__)
#define BLM_VW 4
#define BLM_MR 4
#define BLM_ROWS(OP) OP(0) OP(1) OP(2) OP(3)
#else
#define BLM_VW 4
#define BLM_MR 2
#define BLM_ROWS(OP) OP(0) OP(1)
#endif

static void blm_matmul_ref(int M, int K, const float *BLM_RESTRICT W, const float *BLM_RESTRICT bias,
                           const float *BLM_RESTRICT X, float *BLM_RESTRICT Y) {
    for (int m = 0; m < M; m++)
        for (int t = 0; t < BLM_LP; t++) {
            float s = bias ? bias[m] : 0.0f;
            for (int k = 0; k < K; k++) s += W[(size_t)m * K + k] * X[(size_t)k * BLM_LP + t];
            Y[(size_t)m * BLM_LP + t] = s;
        }
}

#define BLM_INIT(r) const float b##r = bias ? bias[m + r] : 0.0f, *w##r = W + (size_t)(m + r) * K;
#define BLM_DECL(r) float a##r[16];
#define BLM_FILL(r) a##r[t] = b##r;
#define BLM_COEF(r) const float c##r = w##r[k];
#define BLM_FMA(r) a##r[t] += c##r * x[t];
#define BLM_STORE(r) Y[(size_t)(m + r) * BLM_LP + t0 + t] = a##r[t];
static void blm_matmul_c99(int M, int K, const float *BLM_RESTRICT W, const float *BLM_RESTRICT bias,
                           const float *BLM_RESTRICT X, float *BLM_RESTRICT Y) {
    int m = 0;
    for (; m + BLM_MR <= M; m += BLM_MR) {
        BLM_ROWS(BLM_INIT)
        for (int t0 = 0; t0 < BLM_LP; t0 += 16) {
            BLM_ROWS(BLM_DECL)
            for (int t = 0; t < 16; t++) { BLM_ROWS(BLM_FILL) }
            for (int k = 0; k < K; k++) {
                const float *x = X + (size_t)k * BLM_LP + t0;
                BLM_ROWS(BLM_COEF)
                for (int t = 0; t < 16; t++) { BLM_ROWS(BLM_FMA) }
            }
            for (int t = 0; t < 16; t++) { BLM_ROWS(BLM_STORE) }
        }
    }
    for (; m < M; m++) {
        const float *w = W + (size_t)m * K;
        float a[BLM_LP];
        for (int t = 0; t < BLM_LP; t++) a[t] = bias ? bias[m] : 0.0f;
        for (int k = 0; k < K; k++) {
            const float *x = X + (size_t)k * BLM_LP, c = w[k];
            for (int t = 0; t < BLM_LP; t++) a[t] += c * x[t];
        }
        memcpy(Y + (size_t)m * BLM_LP, a, sizeof a);
    }
}

#if defined(__GNUC__) && !defined(BLM_PORTABLE) && !defined(BLM_REFERENCE)
#define BLM_VECTOR 1
#define BLM_NV (16 / BLM_VW) /* vectors per 16 tokens */
/* aligned(4): loads and stores at any float address; may_alias: it views float arrays */
typedef float blm_vf __attribute__((vector_size(4 * BLM_VW), aligned(4), may_alias));
#define BLM_VINIT(r) const float *w##r = W + (size_t)(m + r) * K, b##r = bias ? bias[m + r] : 0.0f;
#define BLM_VDECL(r) blm_vf a##r[BLM_NV]; for (int v = 0; v < BLM_NV; v++) a##r[v] = (blm_vf){0} + b##r;
#define BLM_VFMA(r) { const float c = w##r[k]; for (int v = 0; v < BLM_NV; v++) a##r[v] += c * x[v]; }
#define BLM_VSTORE(r) for (int v = 0; v < BLM_NV; v++) *(blm_vf *)(Y + (size_t)(m + r) * BLM_LP + t0 + v * BLM_VW) = a##r[v];
static void blm_matmul_vec(int M, int K, const float *BLM_RESTRICT W, const float *BLM_RESTRICT bias,
                           const float *BLM_RESTRICT X, float *BLM_RESTRICT Y) {
    int m = 0;
    for (; m + BLM_MR <= M; m += BLM_MR) {
        BLM_ROWS(BLM_VINIT)
        for (int t0 = 0; t0 < BLM_LP; t0 += 16) {
            BLM_ROWS(BLM_VDECL)
            for (int k = 0; k < K; k++) {
                blm_vf x[BLM_NV];
                for (int v = 0; v < BLM_NV; v++) x[v] = *(const blm_vf *)(X + (size_t)k * BLM_LP + t0 + v * BLM_VW);
                BLM_ROWS(BLM_VFMA)
            }
            BLM_ROWS(BLM_VSTORE)
        }
    }
    for (; m < M; m++) {
        const float *w = W + (size_t)m * K;
        for (int t0 = 0; t0 < BLM_LP; t0 += BLM_VW) {
            blm_vf a = (blm_vf){0} + (bias ? bias[m] : 0.0f);
            for (int k = 0; k < K; k++) a += w[k] * *(const blm_vf *)(X + (size_t)k * BLM_LP + t0);
            *(blm_vf *)(Y + (size_t)m * BLM_LP + t0) = a;
        }
    }
}
#else
#define BLM_VECTOR 0
#endif

static void blm_matmul(int M, int K, const float *BLM_RESTRICT W, const float *BLM_RESTRICT bias,
                       const float *BLM_RESTRICT X, float *BLM_RESTRICT Y) {
#if defined(BLM_REFERENCE)
    blm_matmul_ref(M, K, W, bias, X, Y);
#elif BLM_VECTOR
    blm_matmul_vec(M, K, W, bias, X, Y);
#else
    blm_matmul_c99(M, K, W, bias, X, Y);
#endif
}

/* Σ x[0..n) in 16 interleaved partial sums (lane j sums x[j], x[j+16], ...), added pairwise at the end:
 * the inner loop is elementwise, so it vectorizes under strict IEEE, where a single running sum
 * cannot (its order is the result). The order differs from a serial sum by float rounding only. */
static inline float blm_sum(const float *BLM_RESTRICT x, int n) {
#if defined(BLM_REFERENCE)
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += x[i];
    return s;
#else
    float acc[16] = {0.0f};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += x[i + j];
    for (int j = 0; i + j < n; j++) acc[j] += x[i + j];
    for (int j = 0; j < 8; j++) acc[j] += acc[j + 8];
    for (int j = 0; j < 4; j++) acc[j] += acc[j + 4];
    for (int j = 0; j < 2; j++) acc[j] += acc[j + 2];
    return acc[0] + acc[1];
#endif
}

/* LayerNorm over the BLM_D channels of every token of X[D][LP] into Y. */
static void blm_layernorm(const float *BLM_RESTRICT X, const float *BLM_RESTRICT g, const float *BLM_RESTRICT b,
                          float *BLM_RESTRICT Y) {
    float mean[BLM_LP], var[BLM_LP];
    for (int t = 0; t < BLM_LP; t++) mean[t] = var[t] = 0.0f;
    for (int d = 0; d < BLM_D; d++)
        for (int t = 0; t < BLM_LP; t++) mean[t] += X[d * BLM_LP + t];
    for (int t = 0; t < BLM_LP; t++) mean[t] *= 1.0f / BLM_D;
    for (int d = 0; d < BLM_D; d++)
        for (int t = 0; t < BLM_LP; t++) {
            float c = X[d * BLM_LP + t] - mean[t];
            var[t] += c * c;
        }
    for (int t = 0; t < BLM_LP; t++) var[t] = 1.0f / sqrtf(var[t] * (1.0f / BLM_D) + BLM_LN_EPS);
    for (int d = 0; d < BLM_D; d++)
        for (int t = 0; t < BLM_LP; t++) Y[d * BLM_LP + t] = (X[d * BLM_LP + t] - mean[t]) * var[t] * g[d] + b[d];
}

/* log(x) for x > 0, vectorizable: the Cephes logf polynomial on the mantissa in [sqrt(1/2), sqrt(2)). */
static inline float blm_log(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    int e = (int)(bits >> 23) - 126;
    bits = (bits & 0x007fffffu) | 0x3f000000u; /* mantissa m in [0.5, 1) */
    float m;
    memcpy(&m, &bits, sizeof m);
    const int small = m < 0.70710678118654752f;
    e -= small;
    /* m = small ? 2m - 1 : m - 1, as (m + m·small) - 1 with the select on bits (see blm_exp) */
    const uint32_t addb = bits & (0u - (uint32_t)small);
    float add;
    memcpy(&add, &addb, sizeof add);
    m = (m + add) - 1.0f;
    float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    y += -2.12194440e-4f * (float)e - 0.5f * z;
    return m + y + 0.693359375f * (float)e;
}

/* softplus(x) = max(x, 0) + log(1 + exp(-|x|)), as PyTorch (which returns x above 20). max(x, 0) is
 * (x + |x|) / 2, exact, not a select against a constant (see blm_exp for why). */
static inline float blm_softplus(float x) {
    float sp = 0.5f * (x + fabsf(x)) + blm_log(1.0f + blm_exp(-fabsf(x)));
    /* x > 20 ? x : sp as a bit mask: with a select, GCC moves sp's arithmetic into one arm, which
     * strict IEEE then keeps as a branch (see blm_exp). x > 20 iff its bits, as int32, exceed 20.0f's. */
    int32_t xb, sb;
    memcpy(&xb, &x, sizeof xb);
    memcpy(&sb, &sp, sizeof sb);
    const int32_t big = -(int32_t)(xb > 0x41a00000); /* all ones where x > 20 */
    sb = (xb & big) | (sb & ~big);
    memcpy(&sp, &sb, sizeof sp);
    return sp;
}

/* The per-token prefix of block i on h[D][LP]: xz = in_proj(LN(h)), rows 0..DI-1 the x branch,
 * rows DI..2DI-1 the gate SiLU(z). Nothing in it mixes tokens. */
static void blm_block_prefix(int i, const float *BLM_RESTRICT h, float *BLM_RESTRICT xz) {
    float u[BLM_D * BLM_LP];
    blm_layernorm(h, blm_ln_w[i], blm_ln_b[i], u);
    blm_matmul(2 * BLM_DI, BLM_D, blm_in_w[i], 0, u, xz);
    for (int t = 0; t < BLM_DI * BLM_LP; t++) xz[BLM_DI * BLM_LP + t] = blm_silu(xz[BLM_DI * BLM_LP + t]);
}

/* The token-mixing rest of block i: h += out_proj(SSM(SiLU(conv(x))) · gate), given xz from
 * blm_block_prefix (tokens in scan order). */
static void blm_block_mix(int i, float *BLM_RESTRICT h, const float *BLM_RESTRICT xz) {
    float xc[BLM_DI * BLM_LP], dbc[BLM_NX * BLM_LP];
    float xt[BLM_L][BLM_DI], yt[BLM_L][BLM_DI], y[BLM_DI * BLM_LP], o[BLM_D * BLM_LP];
    /* causal depthwise convolution over the tokens (tap j reads token t - (BLM_CONV-1) + j), SiLU */
    for (int c = 0; c < BLM_DI; c++) {
        float xp[BLM_CONV - 1 + BLM_LP]; /* the channel, zero-padded on the left */
        for (int j = 0; j < BLM_CONV - 1; j++) xp[j] = 0.0f;
        memcpy(xp + BLM_CONV - 1, xz + c * BLM_LP, BLM_LP * sizeof(float));
        const float *w = blm_conv_w[i][c];
        float *out = xc + c * BLM_LP;
        for (int t = 0; t < BLM_LP; t++) {
            float s = blm_conv_b[i][c];
            for (int j = 0; j < BLM_CONV; j++) s += w[j] * xp[t + j];
            out[t] = s;
        }
    }
    for (int t = 0; t < BLM_DI * BLM_LP; t++) xc[t] = blm_silu(xc[t]);
    blm_matmul(BLM_NX, BLM_DI, blm_xproj_w[i], 0, xc, dbc);
    /* tokens of x, token-major, for the scan */
    for (int c = 0; c < BLM_DI; c++)
        for (int t = 0; t < BLM_L; t++) xt[t][c] = xc[c * BLM_LP + t];
    /* step sizes Δ = softplus(· + dt_bias) and decays exp(Δ·A) of every head and token */
    float dts[BLM_HEADS][BLM_LP], dec[BLM_HEADS][BLM_LP];
    for (int hd = 0; hd < BLM_HEADS; hd++)
        for (int t = 0; t < BLM_LP; t++) {
            dts[hd][t] = blm_softplus(dbc[hd * BLM_LP + t] + blm_dt_bias[i][hd]);
            dec[hd][t] = blm_exp(dts[hd][t] * blm_A[i][hd]);
        }
    for (int hd = 0; hd < BLM_HEADS; hd++) {
        float s[BLM_STATE][BLM_HEADDIM];
        memset(s, 0, sizeof s);
        const float Dh = blm_Dskip[i][hd];
        for (int t = 0; t < BLM_L; t++) {
            const float dt = dts[hd][t], a = dec[hd][t];
            const float *x = xt[t] + hd * BLM_HEADDIM;
            float *yo = yt[t] + hd * BLM_HEADDIM;
            float acc[BLM_HEADDIM];
            for (int p = 0; p < BLM_HEADDIM; p++) acc[p] = Dh * x[p];
            for (int n = 0; n < BLM_STATE; n++) {
                float bn = dt * dbc[(BLM_HEADS + n) * BLM_LP + t];
                float cn = dbc[(BLM_HEADS + BLM_STATE + n) * BLM_LP + t];
                for (int p = 0; p < BLM_HEADDIM; p++) {
                    s[n][p] = a * s[n][p] + bn * x[p];
                    acc[p] += cn * s[n][p];
                }
            }
            memcpy(yo, acc, sizeof acc);
        }
    }
    /* back to channel-major, gated by SiLU(z); padded tokens zero */
    for (int c = 0; c < BLM_DI; c++) {
        for (int t = 0; t < BLM_L; t++) y[c * BLM_LP + t] = yt[t][c] * xz[(BLM_DI + c) * BLM_LP + t];
        for (int t = BLM_L; t < BLM_LP; t++) y[c * BLM_LP + t] = 0.0f;
    }
    blm_matmul(BLM_D, BLM_DI, blm_out_w[i], 0, y, o);
    for (int t = 0; t < BLM_D * BLM_LP; t++) h[t] += o[t];
}

/* One pre-norm Mamba block on the residual stream h[D][LP], in place. */
static void blm_block(int i, float *BLM_RESTRICT h) {
    float xz[2 * BLM_DI * BLM_LP];
    blm_block_prefix(i, h, xz);
    blm_block_mix(i, h, xz);
}

/* The per-pixel byte encoder on xf[BANDS][LP] (bytes as floats; dequantization folded into
 * blm_enc1_w/b) → e2[D][LP]. */
static void blm_encode(const float *BLM_RESTRICT xf, float *BLM_RESTRICT e2) {
    float e1[BLM_ENC * BLM_LP];
    blm_matmul(BLM_ENC, BLM_BANDS, blm_enc1_w, blm_enc1_b, xf, e1);
    for (int t = 0; t < BLM_ENC * BLM_LP; t++) e1[t] = blm_gelu(e1[t]);
    blm_matmul(BLM_D, BLM_ENC, blm_enc2_w, blm_enc2_b, e1, e2);
}

/* Final norm, mean (or (1 - w)·mean + w·centre, w = BLM_CENTER_W) pooling over the valid tokens, head. */
static void blm_head(const float *BLM_RESTRICT h, float *BLM_RESTRICT logits) {
    float hn[BLM_D * BLM_LP], f[BLM_D];
    blm_layernorm(h, blm_normf_w, blm_normf_b, hn);
    for (int d = 0; d < BLM_D; d++) {
        f[d] = blm_sum(hn + d * BLM_LP, BLM_L) * (1.0f / BLM_L);
#if BLM_CENTER_MEAN
        f[d] = (1.0f - BLM_CENTER_W) * f[d] + BLM_CENTER_W * hn[d * BLM_LP + BLM_CENTER];
#endif
    }
    /* logits = W f + b with the classes along the inner loop (no reduction in it) */
    for (int k = 0; k < BLM_CLASSES; k++) logits[k] = blm_head_b[k];
    for (int d = 0; d < BLM_D; d++)
        for (int k = 0; k < BLM_CLASSES; k++) logits[k] += blm_head_w[k][d] * f[d];
}

static void blm_patch(const uint8_t *BLM_RESTRICT x, float *BLM_RESTRICT logits) {
    float xf[BLM_BANDS * BLM_LP], e2[BLM_D * BLM_LP], h[BLM_D * BLM_LP];
    /* bytes → float, raster order, padded */
    for (int b = 0; b < BLM_BANDS; b++) {
        for (int t = 0; t < BLM_L; t++) xf[b * BLM_LP + t] = (float)x[b * BLM_L + t];
        for (int t = BLM_L; t < BLM_LP; t++) xf[b * BLM_LP + t] = 0.0f;
    }
    blm_encode(xf, e2);
    /* tokens into scan order */
    for (int d = 0; d < BLM_D; d++) {
        for (int t = 0; t < BLM_L; t++) h[d * BLM_LP + t] = e2[d * BLM_LP + blm_order[t]];
        for (int t = BLM_L; t < BLM_LP; t++) h[d * BLM_LP + t] = 0.0f;
    }
    for (int i = 0; i < BLM_LAYERS; i++) blm_block(i, h);
    blm_head(h, logits);
}

/* Logits (n, BLM_CLASSES) of n byte patches (n, BLM_BANDS, BLM_P, BLM_P). Scratch lives on the
 * stack (about 4·(BLM_BANDS + 4·BLM_DI + 4·BLM_D)·BLM_LP bytes, ~120 KB for blm_t), so calls from
 * several threads may run at once. Returns 0. */
int blm_forward(const uint8_t *x, int n, float *logits) {
    for (int i = 0; i < n; i++)
        blm_patch(x + (size_t)i * BLM_BANDS * BLM_L, logits + (size_t)i * BLM_CLASSES);
    return 0;
}

/* Whole scenes: what is per pixel runs once per pixel, not once per window it falls in.
 *
 * blm_pixels: n pixels px (n, BLM_BANDS) bytes, channels last (a tile's rows) → for each pixel its
 * latent h (n, BLM_D), and the first block's x (n, BLM_DI) and gate SiLU(z) (n, BLM_DI).
 * blm_tokens: n windows of those, gathered in scan order (n, BLM_L, ·) each → logits (n, BLM_CLASSES);
 * equals blm_forward on the same windows up to float rounding. Both thread-safe; return 0. */
int blm_pixels(const uint8_t *px, int n, float *h, float *x, float *z) {
    for (int p0 = 0; p0 < n; p0 += BLM_LP) {
        const int m = n - p0 < BLM_LP ? n - p0 : BLM_LP;
        float xf[BLM_BANDS * BLM_LP], e2[BLM_D * BLM_LP], xz[2 * BLM_DI * BLM_LP];
        for (int t = 0; t < BLM_LP; t++) {
            const uint8_t *src = px + (size_t)(p0 + (t < m ? t : 0)) * BLM_BANDS;
            for (int b = 0; b < BLM_BANDS; b++) xf[b * BLM_LP + t] = t < m ? (float)src[b] : 0.0f;
        }
        blm_encode(xf, e2);
        blm_block_prefix(0, e2, xz);
        for (int t = 0; t < m; t++) {
            const size_t q = (size_t)(p0 + t);
            for (int d = 0; d < BLM_D; d++) h[q * BLM_D + d] = e2[d * BLM_LP + t];
            for (int c = 0; c < BLM_DI; c++) {
                x[q * BLM_DI + c] = xz[c * BLM_LP + t];
                z[q * BLM_DI + c] = xz[(BLM_DI + c) * BLM_LP + t];
            }
        }
    }
    return 0;
}

int blm_tokens(const float *h, const float *x, const float *z, int n, float *logits) {
    for (int i = 0; i < n; i++) {
        float hw[BLM_D * BLM_LP], xz[2 * BLM_DI * BLM_LP];
        const float *hi = h + (size_t)i * BLM_L * BLM_D;
        const float *xi = x + (size_t)i * BLM_L * BLM_DI, *zi = z + (size_t)i * BLM_L * BLM_DI;
        for (int d = 0; d < BLM_D; d++) {
            for (int t = 0; t < BLM_L; t++) hw[d * BLM_LP + t] = hi[t * BLM_D + d];
            for (int t = BLM_L; t < BLM_LP; t++) hw[d * BLM_LP + t] = 0.0f;
        }
        for (int c = 0; c < BLM_DI; c++) {
            for (int t = 0; t < BLM_L; t++) {
                xz[c * BLM_LP + t] = xi[t * BLM_DI + c];
                xz[(BLM_DI + c) * BLM_LP + t] = zi[t * BLM_DI + c];
            }
            for (int t = BLM_L; t < BLM_LP; t++) xz[c * BLM_LP + t] = xz[(BLM_DI + c) * BLM_LP + t] = 0.0f;
        }
        blm_block_mix(0, hw, xz);
        for (int l = 1; l < BLM_LAYERS; l++) blm_block(l, hw);
        blm_head(hw, logits + (size_t)i * BLM_CLASSES);
    }
    return 0;
}

/* Widths of blm_pixels' outputs: d_model (h), d_inner (x and z). */
int blm_widths(int *out) {
    out[0] = BLM_D;
    out[1] = BLM_DI;
    return 0;
}

/* The window's tokens in scan order, as raster indices into the BLM_P × BLM_P window. */
int blm_scan_order(int *out) {
    for (int t = 0; t < BLM_L; t++) out[t] = blm_order[t];
    return 0;
}

/* An upper bound of the stack one call needs, in bytes: the sum of every scratch array above
 * (the runner gives its threads at least twice this). */
long blm_stack_bytes(void) {
    const long lp = BLM_LP, per_token = BLM_BANDS + BLM_ENC + 6 * BLM_D + 8 * BLM_DI + BLM_NX + 2 * BLM_HEADS;
    return (long)sizeof(float) * (lp * per_token + 2L * BLM_L * BLM_DI + BLM_CONV - 1 + lp +
                                  (long)BLM_STATE * BLM_HEADDIM + BLM_HEADDIM + BLM_D);
}

/* How this library was built: the matmul path (vector, c99 or reference), floats per vector and rows
 * per register block, e.g. "matmul=vector vw=8 mr=6" (blmkd logs it, so a benchmark says what ran). */
const char *blm_build(void) {
#define BLM_STR2(x) #x
#define BLM_STR(x) BLM_STR2(x)
#if defined(BLM_REFERENCE)
    return "matmul=reference";
#elif BLM_VECTOR
    return "matmul=vector vw=" BLM_STR(BLM_VW) " mr=" BLM_STR(BLM_MR);
#else
    return "matmul=c99 mr=" BLM_STR(BLM_MR);
#endif
}

/* The sizes this file was generated for: bands, patch side, classes. */
int blm_shape(int *out) {
    out[0] = BLM_BANDS;
    out[1] = BLM_P;
    out[2] = BLM_CLASSES;
    return 0;
}
