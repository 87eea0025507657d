/* qmatmul_q4k_tile.h — the body of Q4_K's small-M kernel (qmatmul_q4k.c,
 * whose comment describes it), included there once per instruction set.
 * The includer defines KT_SUF (the name suffix), TK / IK (the function
 * attributes), KT_DPWSSD(s, a, b) (s + the int16 pair products of a and b
 * per int32 lane: vpdpwssd, or vpmaddwd + vpaddd on AVX2: the same
 * integers, |a| <= 3810 and 0 <= b <= 63 so no lane overflows) and
 * KT_DMIN(dm) (lane 1 of dm, dmin, in all 8 lanes). Not a header of its
 * own: no include guard, on purpose. */
#define KT_C2(a, b) a##_##b
#define KT_C(a, b) KT_C2(a, b)
#define KT(name) KT_C(name, KT_SUF)

/* A super-block's sc_j (j = 0..7) as bytes 0..7 of sc (in both 128-bit
 * halves; bytes 8..15 the mins), dmin mn_j (8 floats) into mn and d (8
 * times) into d: the 12 scale bytes as three little-endian words w0 w1 w2
 * (bytes 0-3: the low 6 bits of sc_0..3, their top 2 bits the high bits of
 * sc_4..7; bytes 4-7 likewise for mn; bytes 8-11: the low 4 bits of
 * sc_4..7, high 4 of mn_4..7), unpacked in one xmm: lanes (w0, w2, w1, w2
 * >> 4) masked to 6, 4, 6, 4 bits, lanes 1 and 3 or'ed with bits 6-7 of w0
 * and w1 moved to bits 4-5: sc_0..7 then mn_0..7 as bytes. (The 16-byte
 * load stays inside the 144-byte block.) */
IK void KT(q4k_scales)(const uint8_t *b, __m256i *sc, __m256 *mn, __m256 *d) {
    __m128i w = _mm_loadu_si128((const __m128i *)(b + 4));
    __m128i lo = _mm_srlv_epi32(_mm_shuffle_epi32(w, _MM_SHUFFLE(2, 1, 2, 0)), _mm_set_epi32(4, 0, 0, 0));
    lo = _mm_and_si128(lo, _mm_set_epi32(0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f));
    __m128i hi = _mm_and_si128(_mm_srli_epi32(_mm_shuffle_epi32(w, _MM_SHUFFLE(1, 1, 0, 0)), 2),
                               _mm_set_epi32(0x30303030, 0, 0x30303030, 0));
    __m128i v = _mm_or_si128(lo, hi);
    uint32_t dd;
    memcpy(&dd, b, 4);
    __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dd)); /* d, dmin */
    *sc = _mm256_broadcastsi128_si256(v);
    *d = _mm256_broadcastss_ps(dm);
    *mn = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8))),
                        KT_DMIN(dm));
}

/* Chunk c's scale pair from the decoded register: sc_2c zero-extended into the low 128-bit half's int16
 * lanes, sc_2c+1 into the high half's (vpshufb, in-lane, by a constant control once the loop is unrolled). */
IK __m256i KT(q4k_pair)(__m256i sc, int c) {
    const char z = (char)0x80, a = (char)(2 * c), b = (char)(2 * c + 1);
    return _mm256_shuffle_epi8(sc, _mm256_setr_epi8(a, z, a, z, a, z, a, z, a, z, a, z, a, z, a, z,
                                                    b, z, b, z, b, z, b, z, b, z, b, z, b, z, b, z));
}

/* Chunk c's codes (32 bytes: sub-block 2c in the low nibbles, 2c + 1 in the high ones, each in element
 * order) as the pair layout: *p the elements 0..15 of 2c then of 2c + 1, *q elements 16..31 of both. Each
 * 16-byte half loaded into both halves of a ymm (a load, no shuffle), its high half's dwords shifted right
 * by 4 (vpsrlvd), masked: no lane crossing. */
IK void KT(q4k_codes)(const uint8_t *b, __m256i *p, __m256i *q) {
    const __m256i m15 = _mm256_set1_epi8(15), sh = _mm256_set_epi32(4, 4, 4, 4, 0, 0, 0, 0);
    __m256i v0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)b));
    __m256i v1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(b + 16)));
    *p = _mm256_and_si256(_mm256_srlv_epi32(v0, sh), m15);
    *q = _mm256_and_si256(_mm256_srlv_epi32(v1, sh), m15);
}

/* The repacked layout (Q4_KR, q4k_repack.c): the super-block's scales and mins, one byte each at 132 and
 * 140, as q4k_scales gives them (a 16-byte broadcast, no unpacking), d and dmin at 128. */
IK void KT(q4kr_scales)(const uint8_t *b, __m256i *sc, __m256 *mn, __m256 *d) {
    uint32_t dd;
    memcpy(&dd, b + 128, 4);
    __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dd)); /* d, dmin */
    *sc = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(b + 132)));
    *d = _mm256_broadcastss_ps(dm);
    *mn = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + 140)))),
                        KT_DMIN(dm));
}

/* Chunk c's codes in the repacked layout (32 bytes at 32 c): the pair layout by one load, the low nibbles
 * (*p) and the high ones (*q). */
IK void KT(q4kr_codes)(const uint8_t *b, __m256i *p, __m256i *q) {
    const __m256i m15 = _mm256_set1_epi8(15);
    __m256i v = _mm256_loadu_si256((const __m256i *)b);
    *p = _mm256_and_si256(v, m15);
    *q = _mm256_and_si256(_mm256_srli_epi16(v, 4), m15);
}

/* A super-block's scales and chunk c's codes in either layout (RP: repacked; a constant per instance). */
IK void KT(q4k_scales_any)(const uint8_t *sb, int RP, __m256i *sc, __m256 *mn, __m256 *d) {
    if (RP) KT(q4kr_scales)(sb, sc, mn, d);
    else KT(q4k_scales)(sb, sc, mn, d);
}
IK void KT(q4k_codes_any)(const uint8_t *sb, int RP, int c, __m256i *p, __m256i *q) {
    if (RP) KT(q4kr_codes)(sb + 32 * c, p, q);
    else KT(q4k_codes)(sb + 16 + 32 * c, p, q);
}

/* Weight rows row .. row + R - 1 against activation rows i0 .. i0 + MR - 1.
 * pre: the rows' decoded scales (K_PRE bytes per row and super-block, row
 * r's at pre + K_PRE (r nsb + s): the 4 chunks' scale pairs, dmin mn, d) and
 * un their codes in the pair layout (256 bytes per row and super-block: per
 * chunk c its p then q), or both NULL to decode them here (the same values,
 * so the same bits). Per chunk, weight row and activation row: two
 * vpmaddubsw (p with xa, q with xb), their int16 sum (|.| <= 7620) and one
 * vpmaddwd with the scale pair into the int32 lanes (lanes 0..3 sub-block
 * 2c, 4..7 sub-block 2c + 1; exact). */
IK void KT(q4k_tile)(const struct lmc_qweight *w, int64_t row, int R, const struct lmc_q8rows *x, int64_t i0, int MR,
                 float *y, int64_t ldy, const uint8_t *pre_, const uint8_t *un, const int PRE, const int RP) {
    const uint8_t *pre = PRE ? pre_ : NULL; /* a constant per instance: no branch in the loops */
    const int64_t nsb = w->k / 256, rb = w->row_bytes, BB = RP ? LMC_Q4KR_BYTES : 144; /* bytes a super-block */
    const uint8_t *wp = w->data + row * rb;
    const uint8_t *xp = x->pairs + i0 * x->pair_stride;
    __m256 acc[4][K_MR];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) acc[r][i] = _mm256_setzero_ps();
    /* software prefetch, as Q4_0's tiles: the 4 rows' bytes (contiguous) pft tiles ahead, swept at
     * the rate this tile reads its own (4 BB bytes a super-block: 9 or 10 lines) */
    const int64_t pft = (4 * rb < K_PF_BYTES ? 2 : 1); /* tiles ahead */
    const uint8_t *pf = wp + pft * 4 * rb;
    const int pf_on = !pre && R == 4 && row + (pft + 1) * 4 <= w->n;
    for (int64_t s = 0; s < nsb; s++) {
        if (pf_on) {
            _Pragma("GCC unroll 9") for (int t = 0; t < 9; t++) _mm_prefetch((const char *)pf + 4 * BB * s + 64 * t, _MM_HINT_T0);
            if (RP) _mm_prefetch((const char *)pf + 4 * BB * s + 576, _MM_HINT_T0);
        }
        __m256i scr[4];
        __m256 mnv[4], dv[4];
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            if (pre) {
                const uint8_t *p = pre + K_PRE * (r * nsb + s);
                scr[r] = _mm256_setzero_si256(); /* unused: the stored pairs are loaded */
                mnv[r] = _mm256_load_ps((const float *)(p + 128));
                dv[r] = _mm256_load_ps((const float *)(p + 160));
            } else {
                KT(q4k_scales_any)(wp + r * rb + BB * s, RP, &scr[r], &mnv[r], &dv[r]);
            }
        }
        const uint8_t *xs = xp + s * Q4K_SLOTS * 128;
        __m256i ia[4][K_MR];
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
            _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) ia[r][i] = _mm256_setzero_si256();
        _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
            if (MR == 1 && !pre) { /* decode: one weight row at a time, few vectors live */
                __m256i xa = _mm256_load_si256((const __m256i *)(xs + 64 * c));
                __m256i xb = _mm256_load_si256((const __m256i *)(xs + 64 * c + 32));
                _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
                    __m256i p, q;
                    KT(q4k_codes_any)(wp + r * rb + BB * s, RP, c, &p, &q);
                    __m256i t = _mm256_add_epi16(_mm256_maddubs_epi16(p, xa), _mm256_maddubs_epi16(q, xb));
                    ia[r][0] = KT_DPWSSD(ia[r][0], t, KT(q4k_pair)(scr[r], c));
                }
                continue;
            }
            __m256i pv[4], qv[4], sj[4];
            _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
                if (pre) {
                    const uint8_t *u = un + (r * nsb + s) * 256 + 64 * c;
                    pv[r] = _mm256_load_si256((const __m256i *)u);
                    qv[r] = _mm256_load_si256((const __m256i *)(u + 32));
                    sj[r] = _mm256_load_si256((const __m256i *)(pre + K_PRE * (r * nsb + s) + 32 * c));
                } else {
                    KT(q4k_codes_any)(wp + r * rb + BB * s, RP, c, &pv[r], &qv[r]);
                    sj[r] = KT(q4k_pair)(scr[r], c);
                }
            }
            _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) {
                __m256i xa = _mm256_load_si256((const __m256i *)(xs + i * x->pair_stride + 64 * c));
                __m256i xb = _mm256_load_si256((const __m256i *)(xs + i * x->pair_stride + 64 * c + 32));
                _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
                    __m256i t = _mm256_add_epi16(_mm256_maddubs_epi16(pv[r], xa), _mm256_maddubs_epi16(qv[r], xb));
                    ia[r][i] = KT_DPWSSD(ia[r][i], t, sj[r]);
                }
            }
        }
        _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) {
            const uint8_t *a = xs + i * x->pair_stride;
            __m256 f = _mm256_load_ps((const float *)(a + 256));
            __m256 dx = _mm256_broadcast_ss((const float *)(a + 288));
            _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
                acc[r][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[r][i]), _mm256_mul_ps(dv[r], dx), acc[r][i]);
                acc[r][i] = _mm256_fnmadd_ps(mnv[r], f, acc[r][i]);
            }
        }
    }
    const __m256 zero = _mm256_setzero_ps();
    _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) {
        __m256 a = acc[0][i], b = R > 1 ? acc[1][i] : zero, c = R > 2 ? acc[2][i] : zero, d = R > 3 ? acc[3][i] : zero;
        __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
        __m128 sum = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        if (R == 4) _mm_storeu_ps(y + (i0 + i) * ldy + row, sum);
        else y[(i0 + i) * ldy + row] = _mm_cvtss_f32(sum);
    }
}

#define KT_ONE(R, MR, P, RP)                                                                                     \
    TK static void KT(q4k_##R##x##MR##_##P##_##RP)(const struct lmc_qweight *w, int64_t row,                      \
                                                  const struct lmc_q8rows *x, int64_t i0, float *y, int64_t ldy,  \
                                                  const uint8_t *pre, const uint8_t *un) {                        \
        KT(q4k_tile)(w, row, R, x, i0, MR, y, ldy, pre, un, P, RP);                                              \
    }
#define KT_SET(RP)                                                                                               \
    KT_ONE(4, 1, 0, RP) KT_ONE(4, 2, 0, RP) KT_ONE(4, 3, 0, RP) KT_ONE(4, 4, 0, RP) KT_ONE(1, 1, 0, RP)          \
    KT_ONE(1, 2, 0, RP) KT_ONE(1, 3, 0, RP) KT_ONE(1, 4, 0, RP) KT_ONE(4, 1, 1, RP) KT_ONE(4, 2, 1, RP)          \
    KT_ONE(4, 3, 1, RP) KT_ONE(4, 4, 1, RP) KT_ONE(1, 1, 1, RP) KT_ONE(1, 2, 1, RP) KT_ONE(1, 3, 1, RP)          \
    KT_ONE(1, 4, 1, RP)
KT_SET(0)
KT_SET(1)
#define KT_TAB(P, RP)                                                                                            \
    {{NULL, KT(q4k_4x1_##P##_##RP), KT(q4k_4x2_##P##_##RP), KT(q4k_4x3_##P##_##RP), KT(q4k_4x4_##P##_##RP)},       \
     {NULL, KT(q4k_1x1_##P##_##RP), KT(q4k_1x2_##P##_##RP), KT(q4k_1x3_##P##_##RP), KT(q4k_1x4_##P##_##RP)}}
/* [repacked][pre][R == 1][MR] */
static const q4k_fn KT(q4k_fns)[2][2][2][K_MR + 1] = {{KT_TAB(0, 0), KT_TAB(1, 0)}, {KT_TAB(0, 1), KT_TAB(1, 1)}};

IK void KT(q4k_rows_any)(const struct lmc_qweight *w, int64_t r0, int64_t r1, const struct lmc_q8rows *x, float *y,
                         int64_t ldy, const int RP) {
    int64_t nch = (x->m + K_MR - 1) / K_MR, nsb = w->k / 256, BB = RP ? LMC_Q4KR_BYTES : 144;
    /* More than one chunk of activation rows: each 4-row tile's scales decoded and codes unpacked once for
     * all of them. */
    _Alignas(64) uint8_t pre[4 * K_PRE * K_PRE_MAX];
    _Alignas(64) uint8_t un[4 * 256 * K_PRE_MAX];
    const int use_pre = nch > 1 && nsb <= K_PRE_MAX;
    for (int64_t r = r0; r < r1;) {
        int four = r + 4 <= r1, R = four ? 4 : 1;
        if (use_pre)
            for (int t = 0; t < R; t++)
                for (int64_t s = 0; s < nsb; s++) {
                    __m256i sc;
                    __m256 mn, d;
                    const uint8_t *b = w->data + (r + t) * w->row_bytes + BB * s;
                    KT(q4k_scales_any)(b, RP, &sc, &mn, &d);
                    uint8_t *p = pre + K_PRE * (t * nsb + s);
                    for (int c = 0; c < 4; c++) {
                        _mm256_store_si256((__m256i *)(p + 32 * c), KT(q4k_pair)(sc, c));
                        __m256i pv, qv;
                        KT(q4k_codes_any)(b, RP, c, &pv, &qv);
                        uint8_t *u = un + (t * nsb + s) * 256 + 64 * c;
                        _mm256_store_si256((__m256i *)u, pv);
                        _mm256_store_si256((__m256i *)(u + 32), qv);
                    }
                    _mm256_store_ps((float *)(p + 128), mn);
                    _mm256_store_ps((float *)(p + 160), d);
                }
        for (int64_t c = 0; c < nch; c++) {
            int64_t base = x->m / nch, rem = x->m % nch, i0 = c * base + LMC_MIN(c, rem);
            int mr = (int)(base + (c < rem));
            KT(q4k_fns)[RP][use_pre][four ? 0 : 1][mr](w, r, x, i0, y, ldy, pre, un);
        }
        r += R;
    }
}

TK static void KT(q4k_rows)(const struct lmc_qweight *w, int64_t r0, int64_t r1, const struct lmc_q8rows *x, float *y,
                          int64_t ldy) {
    KT(q4k_rows_any)(w, r0, r1, x, y, ldy, 0);
}
TK static void KT(q4kr_rows)(const struct lmc_qweight *w, int64_t r0, int64_t r1, const struct lmc_q8rows *x, float *y,
                           int64_t ldy) {
    KT(q4k_rows_any)(w, r0, r1, x, y, ldy, 1);
}

#undef KT_SET
#undef KT_TAB
#undef KT_ONE
#undef KT
#undef KT_C
#undef KT_C2
