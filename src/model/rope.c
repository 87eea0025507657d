/* rope.c — rotary-embedding frequencies for every RoPE scaling type HF
 * supports for these families: default, linear, dynamic (NTK), llama3, yarn.
 * Follows transformers' rope init functions, computed in double. */
#include "model/model.h"

#include <math.h>

static double yarn_get_mscale(double scale, double mscale) {
    return scale <= 1.0 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

static double yarn_correction_dim(double n_rot, double dim, double base, double max_pos) {
    return dim * log(max_pos / (n_rot * 2.0 * M_PI)) / (2.0 * log(base));
}

void lmc_rope_freqs(const struct lmc_config *c, int64_t rot_dim, int64_t seq_len, double *inv_freq,
                    float *attn_scale) {
    const struct lmc_rope_config *r = &c->rope;
    int64_t half = rot_dim / 2;
    double base = r->theta, dim = (double)rot_dim, factor = r->factor > 0 ? r->factor : 1.0;
    double orig = r->original_max_pos > 0 ? (double)r->original_max_pos
                                          : (double)c->max_position_embeddings;
    *attn_scale = 1.0f;
    if (r->type == LMC_ROPE_DYNAMIC) {
        double maxp = (double)c->max_position_embeddings;
        if (r->original_max_pos > 0) maxp = (double)r->original_max_pos;
        if ((double)seq_len > maxp)
            base = base * pow(factor * (double)seq_len / maxp - (factor - 1.0), dim / (dim - 2.0));
    }
    for (int64_t i = 0; i < half; i++) inv_freq[i] = 1.0 / pow(base, (double)(2 * i) / dim);
    switch (r->type) {
    case LMC_ROPE_DEFAULT:
    case LMC_ROPE_DYNAMIC:
        break;
    case LMC_ROPE_LINEAR:
        for (int64_t i = 0; i < half; i++) inv_freq[i] /= factor;
        break;
    case LMC_ROPE_LLAMA3: {
        double lo = r->low_freq_factor, hi = r->high_freq_factor;
        double lo_wl = orig / lo, hi_wl = orig / hi;
        for (int64_t i = 0; i < half; i++) {
            double wl = 2.0 * M_PI / inv_freq[i];
            if (wl > lo_wl) {
                inv_freq[i] /= factor;
            } else if (wl >= hi_wl) {
                double smooth = (orig / wl - lo) / (hi - lo);
                inv_freq[i] = (1.0 - smooth) * inv_freq[i] / factor + smooth * inv_freq[i];
            }
        }
        break;
    }
    case LMC_ROPE_YARN: {
        double af = r->attention_factor;
        if (af < 0) {
            if (r->mscale > 0 && r->mscale_all_dim > 0)
                af = yarn_get_mscale(factor, r->mscale) / yarn_get_mscale(factor, r->mscale_all_dim);
            else
                af = yarn_get_mscale(factor, 1.0);
        }
        double low = yarn_correction_dim(r->beta_fast, dim, base, orig);
        double high = yarn_correction_dim(r->beta_slow, dim, base, orig);
        if (r->truncate) {
            low = floor(low);
            high = ceil(high);
        }
        if (low < 0) low = 0;
        if (high > dim - 1) high = dim - 1;
        if (low == high) high += 0.001;
        for (int64_t i = 0; i < half; i++) {
            double extrap = inv_freq[i], interp = inv_freq[i] / factor;
            double ramp = ((double)i - low) / (high - low);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            double ef = 1.0 - ramp; /* extrapolation weight */
            inv_freq[i] = interp * (1.0 - ef) + extrap * ef;
        }
        *attn_scale = (float)af;
        break;
    }
    }
}
