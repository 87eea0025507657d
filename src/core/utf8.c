/* utf8.c — UTF-8 validation and "complete prefix" for streaming output. */
#include "core/core.h"

#include <string.h>

/* Length of the valid sequence starting at s[0] (1..4), 0 if invalid, -1 if
 * valid so far but truncated by the end of the buffer. */
static int utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    int len;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
    else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
    else return 0;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return -1;
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
        /* reject overlongs / surrogates / > U+10FFFF as early as possible */
        if (i == 1) {
            if (len == 3 && c == 0xe0 && s[1] < 0xa0) return 0;
            if (len == 3 && c == 0xed && s[1] >= 0xa0) return 0;
            if (len == 4 && c == 0xf0 && s[1] < 0x90) return 0;
            if (len == 4 && c == 0xf4 && s[1] >= 0x90) return 0;
        }
    }
    (void)cp;
    return len;
}

/* Whether s[0..k) could begin a valid sequence (k >= 2). */
static bool utf8_seq_prefix_ok(const unsigned char *s, size_t k) {
    if ((s[k - 1] & 0xc0) != 0x80) return false;
    size_t need = s[0] < 0xe0 ? 2 : s[0] < 0xf0 ? 3 : 4;
    if (k > need) return false;
    if (k == 2) {
        if (s[0] == 0xe0 && s[1] < 0xa0) return false;
        if (s[0] == 0xed && s[1] >= 0xa0) return false;
        if (s[0] == 0xf0 && s[1] < 0x90) return false;
        if (s[0] == 0xf4 && s[1] >= 0x90) return false;
    }
    return true;
}

size_t lmc_utf8_valid_prefix(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        int l = utf8_seq(s + i, n - i);
        if (l <= 0) return i;
        i += (size_t)l;
    }
    return i;
}

size_t lmc_utf8_complete_prefix(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        int l = utf8_seq(s + i, n - i);
        if (l < 0) return i;       /* incomplete tail: wait for more bytes */
        i += l == 0 ? 1 : (size_t)l;
    }
    return i;
}

size_t lmc_utf8_sanitize(const char *str, size_t n, bool final, char *out, size_t *consumed) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, o = 0;
    while (i < n) {
        int l = utf8_seq(s + i, n - i);
        if (l > 0) {
            memcpy(out + o, s + i, (size_t)l);
            o += (size_t)l;
            i += (size_t)l;
            continue;
        }
        if (l < 0 && !final) break; /* wait for the rest of the character */
        /* maximal subpart: the lead byte plus the continuation bytes that
         * were still valid for it */
        size_t k = 1;
        if (s[i] >= 0xc2 && s[i] <= 0xf4)
            while (i + k < n && k < 4 && utf8_seq_prefix_ok(s + i, k + 1)) k++;
        memcpy(out + o, "\xef\xbf\xbd", 3);
        o += 3;
        i += k;
    }
    out[o] = 0;
    if (consumed) *consumed = i;
    return o;
}
