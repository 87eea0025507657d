/* grammar.c — the byte grammar, its pushdown parse state and token masks.
 * Elements live in one array; an alternative is a run of elements ended by
 * an END element. A stack is a list of element positions, the top (last)
 * being the next element to match; expanding a stack replaces a rule
 * reference on top by each of the rule's alternatives (over the position
 * after the reference), and pops finished alternatives, until every top is
 * a byte set or the stack is empty (the sentence may end). */
#include "infer/grammar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STACKS 4096
#define MAX_DEPTH 2048
#define CACHE_SLOTS 64

enum { GE_END, GE_SET, GE_RULE };
struct gelem { uint8_t kind; uint32_t arg; };
struct grule { char name[64]; uint32_t *alts; uint32_t n_alts, cap_alts; };

struct lmc_grammar {
    struct gelem *el;
    uint32_t n_el, cap_el;
    uint64_t (*sets)[4];
    uint32_t n_sets, cap_sets;
    struct grule *rules;
    uint32_t n_rules, cap_rules;
    int start;
    bool oom, finished;
    /* alternatives being built (nested: a rule may be made while another's alternative is open) */
    struct pending { int rule; struct gelem *el; uint32_t n, cap; } pend[64];
    int n_pend;
};

/* a set of stacks stored flat (no allocation per stack): stack i is data[s[i].off .. + s[i].n) */
struct stack { uint32_t off, n; };
struct sset { struct stack *s; uint32_t n, cap; uint32_t *data; uint32_t used, dcap; bool overflow; };

struct cache_entry { uint64_t key; uint32_t *sig; uint32_t sig_n; uint8_t *mask; };

/* a lazily built automaton over the stack sets a mask walk meets: each
 * distinct set gets an id once, and its transition per byte is computed
 * once, so walking the vocabulary trie costs a table lookup per node */
#define DFA_MAX 4096
struct dfa_state { uint32_t *sig; uint32_t sig_n; uint64_t hash; struct sset set; int32_t *next; };
struct dfa {
    struct dfa_state *st;
    uint32_t n, cap;
    int32_t *index;          /* open addressing: hash -> id + 1 (0: empty) */
    uint32_t index_cap;
};

static void dfa_free(struct dfa *d);

struct lmc_grammar_state {
    const struct lmc_grammar *g;
    struct dfa dfa;
    struct sset cur;
    struct cache_entry cache[CACHE_SLOTS];
    uint32_t cache_next;
    int32_t cache_vocab;
};

struct tnode { uint32_t child0, n_child; int32_t token; uint8_t byte; }; /* children contiguous */
struct lmc_grammar_vocab {
    struct tnode *nodes;
    uint32_t n_nodes;
    int32_t n_vocab;
    int32_t *eos;
    int n_eos;
    int32_t *dup;     /* dup[t]: the next token with the same bytes as t, or -1 */
    char *bytes;      /* every token's bytes, token t at bytes + off[t], off[t+1] - off[t] long */
    size_t *off;
};

/* ---- building ---- */
lmc_status lmc_grammar_new(struct lmc_grammar **out, lmc_err *err) {
    *out = calloc(1, sizeof **out);
    if (!*out) return lmc_err_set(err, LMC_ERR_OOM, "grammar: out of memory");
    (*out)->start = -1;
    return LMC_OK;
}

void lmc_grammar_free(struct lmc_grammar *g) {
    if (!g) return;
    for (uint32_t i = 0; i < g->n_rules; i++) free(g->rules[i].alts);
    free(g->rules);
    for (int i = 0; i < g->n_pend; i++) free(g->pend[i].el);
    free(g->el);
    free(g->sets);
    free(g);
}

static bool grow(void **p, uint32_t *cap, uint32_t need, size_t elem) {
    if (need <= *cap) return true;
    uint32_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

int lmc_grammar_rule(struct lmc_grammar *g, const char *name) {
    if (g->oom || !grow((void **)&g->rules, &g->cap_rules, g->n_rules + 1, sizeof *g->rules)) {
        g->oom = true;
        return -1;
    }
    struct grule *r = &g->rules[g->n_rules];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name ? name : "rule");
    return (int)g->n_rules++;
}

static void push_el(struct lmc_grammar *g, uint8_t kind, uint32_t arg) {
    if (g->oom || g->n_pend == 0) {
        g->oom = true;
        return;
    }
    struct pending *p = &g->pend[g->n_pend - 1];
    if (!grow((void **)&p->el, &p->cap, p->n + 1, sizeof *p->el)) {
        g->oom = true;
        return;
    }
    p->el[p->n++] = (struct gelem){kind, arg};
}

void lmc_grammar_alt_begin(struct lmc_grammar *g, int rule) {
    if (g->oom || rule < 0 || (uint32_t)rule >= g->n_rules || g->n_pend == 64) {
        g->oom = true;
        return;
    }
    g->pend[g->n_pend++] = (struct pending){rule, NULL, 0, 0};
}

static uint32_t add_set(struct lmc_grammar *g, const uint64_t set[4]) {
    for (uint32_t i = 0; i < g->n_sets; i++)
        if (!memcmp(g->sets[i], set, sizeof g->sets[i])) return i;
    if (!grow((void **)&g->sets, &g->cap_sets, g->n_sets + 1, sizeof *g->sets)) {
        g->oom = true;
        return 0;
    }
    memcpy(g->sets[g->n_sets], set, sizeof g->sets[0]);
    return g->n_sets++;
}

void lmc_grammar_add_bytes(struct lmc_grammar *g, const uint8_t r[][2], int n, bool negate) {
    uint64_t set[4] = {0};
    for (int i = 0; i < n; i++)
        for (int b = r[i][0]; b <= r[i][1]; b++) set[b >> 6] |= 1ull << (b & 63);
    if (negate)
        for (int k = 0; k < 4; k++) set[k] = ~set[k];
    uint32_t id = add_set(g, set);
    push_el(g, GE_SET, id);
}

void lmc_grammar_add_literal(struct lmc_grammar *g, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t r[1][2] = {{(uint8_t)s[i], (uint8_t)s[i]}};
        lmc_grammar_add_bytes(g, r, 1, false);
    }
}

void lmc_grammar_add_rule(struct lmc_grammar *g, int rule) { push_el(g, GE_RULE, (uint32_t)rule); }
/* the finished alternative goes into the element array in one piece */
void lmc_grammar_alt_end(struct lmc_grammar *g) {
    push_el(g, GE_END, 0);
    if (g->oom) return;
    struct pending *p = &g->pend[--g->n_pend];
    struct grule *r = &g->rules[p->rule];
    if (!grow((void **)&g->el, &g->cap_el, g->n_el + p->n, sizeof *g->el) ||
        !grow((void **)&r->alts, &r->cap_alts, r->n_alts + 1, sizeof *r->alts)) {
        g->oom = true;
    } else {
        r->alts[r->n_alts++] = g->n_el;
        memcpy(g->el + g->n_el, p->el, p->n * sizeof *p->el);
        g->n_el += p->n;
    }
    free(p->el);
}

/* can rule r derive the empty string? (fixed point over all rules) */
static void nullable_rules(const struct lmc_grammar *g, bool *nul) {
    memset(nul, 0, g->n_rules * sizeof *nul);
    for (bool changed = true; changed;) {
        changed = false;
        for (uint32_t r = 0; r < g->n_rules; r++) {
            if (nul[r]) continue;
            for (uint32_t a = 0; a < g->rules[r].n_alts && !nul[r]; a++) {
                uint32_t p = g->rules[r].alts[a];
                bool all = true;
                for (; g->el[p].kind != GE_END; p++)
                    if (g->el[p].kind == GE_SET || !nul[g->el[p].arg]) {
                        all = false;
                        break;
                    }
                if (all) nul[r] = changed = true;
            }
        }
    }
}

lmc_status lmc_grammar_finish(struct lmc_grammar *g, int start, lmc_err *err) {
    if (g->n_pend) return lmc_err_set(err, LMC_ERR_ARG, "grammar: an alternative was not ended");
    if (g->oom) return lmc_err_set(err, LMC_ERR_OOM, "grammar: out of memory");
    if (start < 0 || (uint32_t)start >= g->n_rules) return lmc_err_set(err, LMC_ERR_ARG, "grammar: no start rule");
    for (uint32_t r = 0; r < g->n_rules; r++)
        if (!g->rules[r].n_alts) return lmc_err_set(err, LMC_ERR_ARG, "grammar: rule '%s' has no alternative", g->rules[r].name);
    /* left recursion: rule r reaches itself through leading (nullable) references */
    bool *nul = calloc(g->n_rules, sizeof *nul);
    uint8_t *reach = calloc((size_t)g->n_rules * g->n_rules, 1);
    if (!nul || !reach) {
        free(nul);
        free(reach);
        return lmc_err_set(err, LMC_ERR_OOM, "grammar: out of memory");
    }
    nullable_rules(g, nul);
    uint32_t R = g->n_rules;
    for (uint32_t r = 0; r < R; r++)
        for (uint32_t a = 0; a < g->rules[r].n_alts; a++)
            for (uint32_t p = g->rules[r].alts[a]; g->el[p].kind == GE_RULE; p++) {
                reach[r * R + g->el[p].arg] = 1;
                if (!nul[g->el[p].arg]) break;
            }
    for (uint32_t k = 0; k < R; k++) /* transitive closure */
        for (uint32_t i = 0; i < R; i++)
            if (reach[i * R + k])
                for (uint32_t j = 0; j < R; j++)
                    if (reach[k * R + j]) reach[i * R + j] = 1;
    lmc_status st = LMC_OK;
    for (uint32_t r = 0; r < R && !st; r++)
        if (reach[r * R + r]) st = lmc_err_set(err, LMC_ERR_ARG, "grammar: rule '%s' is left-recursive", g->rules[r].name);
    free(nul);
    free(reach);
    if (st) return st;
    g->start = start;
    g->finished = true;
    return LMC_OK;
}

/* ---- stack sets ---- */
static void sset_clear(struct sset *s) {
    s->n = 0;
    s->used = 0;
    s->overflow = false;
}
static void sset_free(struct sset *s) {
    free(s->s);
    free(s->data);
    memset(s, 0, sizeof *s);
}

static void sset_add(struct sset *s, const uint32_t *v, uint32_t n) {
    for (uint32_t i = 0; i < s->n; i++)
        if (s->s[i].n == n && (n == 0 || !memcmp(s->data + s->s[i].off, v, n * sizeof *v))) return;
    if (s->n == MAX_STACKS || !grow((void **)&s->s, &s->cap, s->n + 1, sizeof *s->s) ||
        !grow((void **)&s->data, &s->dcap, s->used + n + 1, sizeof *s->data)) {
        s->overflow = true;
        return;
    }
    if (n) memcpy(s->data + s->used, v, n * sizeof *v);
    s->s[s->n++] = (struct stack){s->used, n};
    s->used += n;
}

/* expands stack v[0..n) (with spare room up to MAX_DEPTH) into s */
static void expand(const struct lmc_grammar *g, uint32_t *v, uint32_t n, struct sset *s, int guard) {
    if (guard > MAX_DEPTH) {
        s->overflow = true;
        return;
    }
    while (n > 0 && g->el[v[n - 1]].kind == GE_END) n--; /* finished alternatives */
    if (n == 0 || g->el[v[n - 1]].kind == GE_SET) {
        sset_add(s, v, n);
        return;
    }
    if (n + 1 >= MAX_DEPTH) {
        s->overflow = true;
        return;
    }
    /* entries at and above n-1 may belong to the caller's stack (popped above): restore them after */
    uint32_t pos = v[n - 1], saved_next = v[n];
    const struct grule *r = &g->rules[g->el[pos].arg];
    bool tail = g->el[pos + 1].kind == GE_END; /* nothing follows the reference: no frame to return to */
    for (uint32_t a = 0; a < r->n_alts; a++) {
        if (tail) {
            v[n - 1] = r->alts[a];
            expand(g, v, n, s, guard + 1);
        } else {
            v[n - 1] = pos + 1;
            v[n] = r->alts[a];
            expand(g, v, n + 1, s, guard + 1);
        }
    }
    v[n - 1] = pos;
    v[n] = saved_next;
}

static bool has_byte(const struct lmc_grammar *g, uint32_t pos, uint8_t b) {
    return (g->sets[g->el[pos].arg][b >> 6] >> (b & 63)) & 1;
}

/* out = stacks of in advanced by byte b */
static void advance(const struct lmc_grammar *g, const struct sset *in, uint8_t b, struct sset *out, uint32_t *scratch) {
    sset_clear(out);
    for (uint32_t i = 0; i < in->n; i++) {
        const struct stack *st = &in->s[i];
        const uint32_t *sv = in->data + st->off;
        if (st->n == 0 || !has_byte(g, sv[st->n - 1], b)) continue;
        memcpy(scratch, sv, st->n * sizeof *scratch);
        scratch[st->n - 1]++;
        expand(g, scratch, st->n, out, 0);
    }
}

lmc_status lmc_grammar_state_new(const struct lmc_grammar *g, struct lmc_grammar_state **out, lmc_err *err) {
    *out = NULL;
    if (!g || !g->finished) return lmc_err_set(err, LMC_ERR_ARG, "grammar: not finished");
    struct lmc_grammar_state *s = calloc(1, sizeof *s);
    uint32_t *scratch = malloc(MAX_DEPTH * sizeof *scratch);
    if (!s || !scratch) {
        free(s);
        free(scratch);
        return lmc_err_set(err, LMC_ERR_OOM, "grammar: out of memory");
    }
    s->g = g;
    const struct grule *r = &g->rules[g->start];
    for (uint32_t a = 0; a < r->n_alts; a++) {
        scratch[0] = r->alts[a];
        expand(g, scratch, 1, &s->cur, 0);
    }
    free(scratch);
    if (s->cur.overflow) {
        lmc_grammar_state_free(s);
        return lmc_err_set(err, LMC_ERR_ARG, "grammar: too many parse stacks");
    }
    *out = s;
    return LMC_OK;
}

void lmc_grammar_state_free(struct lmc_grammar_state *s) {
    if (!s) return;
    dfa_free(&s->dfa);
    sset_free(&s->cur);
    for (int i = 0; i < CACHE_SLOTS; i++) {
        free(s->cache[i].sig);
        free(s->cache[i].mask);
    }
    free(s);
}

bool lmc_grammar_accept(struct lmc_grammar_state *s, const char *bytes, size_t n) {
    struct sset a = {0}, b = {0};
    uint32_t *scratch = malloc(MAX_DEPTH * sizeof *scratch);
    if (!scratch) return false;
    const struct sset *in = &s->cur;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        struct sset *out = (i & 1) ? &b : &a;
        advance(s->g, in, (uint8_t)bytes[i], out, scratch);
        ok = out->n > 0 && !out->overflow;
        in = out;
    }
    free(scratch);
    if (ok && n > 0) {
        sset_free(&s->cur);
        s->cur = *in;
        if (in == &a) sset_free(&b);
        else sset_free(&a);
    } else {
        sset_free(&a);
        sset_free(&b);
    }
    return ok;
}

bool lmc_grammar_can_end(const struct lmc_grammar_state *s) {
    for (uint32_t i = 0; i < s->cur.n; i++)
        if (s->cur.s[i].n == 0) return true;
    return false;
}

bool lmc_grammar_can_continue(const struct lmc_grammar_state *s) {
    for (uint32_t i = 0; i < s->cur.n; i++)
        if (s->cur.s[i].n > 0) return true;
    return false;
}

/* ---- vocabulary trie ---- */
struct build_node { int32_t token; uint32_t first_child, next_sibling; uint8_t byte; };

lmc_status lmc_grammar_vocab_new(const char *const *tokens, const size_t *len, int32_t n_vocab, const int32_t *eos,
                                 int n_eos, struct lmc_grammar_vocab **out, lmc_err *err) {
    *out = NULL;
    if (n_vocab <= 0 || n_eos < 0) return lmc_err_set(err, LMC_ERR_ARG, "grammar vocab: %d tokens", (int)n_vocab);
    /* a linked trie first, then flattened with contiguous children */
    struct build_node *bn = NULL;
    uint32_t nb = 1, capb = 0;
    int32_t *dup = malloc((size_t)n_vocab * sizeof *dup);
    if (!dup || !grow((void **)&bn, &capb, 1, sizeof *bn)) {
        free(dup);
        return lmc_err_set(err, LMC_ERR_OOM, "grammar vocab: out of memory");
    }
    for (int32_t t = 0; t < n_vocab; t++) dup[t] = -1;
    bn[0] = (struct build_node){-1, 0, 0, 0};
    for (int32_t t = 0; t < n_vocab; t++) {
        uint32_t cur = 0;
        for (size_t i = 0; i < len[t]; i++) {
            uint8_t b = (uint8_t)tokens[t][i];
            uint32_t c = bn[cur].first_child, prev = 0;
            while (c && bn[c].byte != b) {
                prev = c;
                c = bn[c].next_sibling;
            }
            if (!c) {
                if (!grow((void **)&bn, &capb, nb + 1, sizeof *bn)) {
                    free(bn);
                    free(dup);
                    return lmc_err_set(err, LMC_ERR_OOM, "grammar vocab: out of memory");
                }
                c = nb++;
                bn[c] = (struct build_node){-1, 0, 0, b};
                if (prev) bn[prev].next_sibling = c;
                else bn[cur].first_child = c;
            }
            cur = c;
        }
        if (cur && bn[cur].token < 0) bn[cur].token = t;
        else if (cur) { /* the same bytes as an earlier token */
            int32_t x = bn[cur].token;
            while (dup[x] >= 0) x = dup[x];
            dup[x] = t;
        }
    }
    struct lmc_grammar_vocab *v = calloc(1, sizeof *v);
    struct tnode *nodes = malloc(nb * sizeof *nodes);
    uint32_t *queue = malloc(nb * sizeof *queue);
    int32_t *e = malloc((size_t)(n_eos ? n_eos : 1) * sizeof *e);
    if (!v || !nodes || !queue || !e) {
        free(dup);
        free(bn);
        free(v);
        free(nodes);
        free(queue);
        free(e);
        return lmc_err_set(err, LMC_ERR_OOM, "grammar vocab: out of memory");
    }
    /* breadth-first: node i's children get consecutive slots */
    uint32_t head = 0, tail = 1, next = 1;
    queue[0] = 0;
    nodes[0] = (struct tnode){0, 0, -1, 0};
    uint32_t *slot = malloc(nb * sizeof *slot);
    if (!slot) {
        free(dup); free(bn); free(v); free(nodes); free(queue); free(e);
        return lmc_err_set(err, LMC_ERR_OOM, "grammar vocab: out of memory");
    }
    slot[0] = 0;
    while (head < tail) {
        uint32_t b = queue[head++], me = slot[b];
        nodes[me].child0 = next;
        nodes[me].n_child = 0;
        for (uint32_t c = bn[b].first_child; c; c = bn[c].next_sibling) {
            slot[c] = next;
            nodes[next] = (struct tnode){0, 0, bn[c].token, bn[c].byte};
            next++;
            nodes[me].n_child++;
            queue[tail++] = c;
        }
    }
    free(slot);
    free(queue);
    free(bn);
    if (n_eos) memcpy(e, eos, (size_t)n_eos * sizeof *e);
    v->nodes = nodes;
    v->n_nodes = nb;
    v->n_vocab = n_vocab;
    v->eos = e;
    v->n_eos = n_eos;
    v->dup = dup;
    size_t total = 0;
    for (int32_t t = 0; t < n_vocab; t++) total += len[t];
    v->bytes = malloc(total ? total : 1);
    v->off = malloc(((size_t)n_vocab + 1) * sizeof *v->off);
    if (!v->bytes || !v->off) {
        lmc_grammar_vocab_free(v);
        return lmc_err_set(err, LMC_ERR_OOM, "grammar vocab: out of memory");
    }
    v->off[0] = 0;
    for (int32_t t = 0; t < n_vocab; t++) {
        if (len[t]) memcpy(v->bytes + v->off[t], tokens[t], len[t]);
        v->off[t + 1] = v->off[t] + len[t];
    }
    *out = v;
    return LMC_OK;
}

void lmc_grammar_vocab_free(struct lmc_grammar_vocab *v) {
    if (!v) return;
    free(v->nodes);
    free(v->eos);
    free(v->dup);
    free(v->bytes);
    free(v->off);
    free(v);
}

bool lmc_grammar_accept_token(struct lmc_grammar_state *s, const struct lmc_grammar_vocab *v, int32_t id) {
    if (id < 0 || id >= v->n_vocab) return false;
    for (int i = 0; i < v->n_eos; i++)
        if (v->eos[i] == id) return lmc_grammar_can_end(s);
    size_t n = v->off[id + 1] - v->off[id];
    return n > 0 && lmc_grammar_accept(s, v->bytes + v->off[id], n);
}

/* signature of a stack set: its stacks' contents, each prefixed by its length, in order */
static uint32_t *signature(const struct sset *s, uint32_t *n, uint64_t *hash) {
    uint32_t total = 1;
    for (uint32_t i = 0; i < s->n; i++) total += 1 + s->s[i].n;
    uint32_t *sig = malloc(total * sizeof *sig);
    if (!sig) return NULL;
    uint32_t k = 0;
    sig[k++] = s->n;
    for (uint32_t i = 0; i < s->n; i++) {
        sig[k++] = s->s[i].n;
        if (s->s[i].n) memcpy(sig + k, s->data + s->s[i].off, s->s[i].n * sizeof *sig);
        k += s->s[i].n;
    }
    uint64_t h = 1469598103934665603ull;
    for (uint32_t i = 0; i < k; i++) h = (h ^ sig[i]) * 1099511628211ull;
    *n = k;
    *hash = h;
    return sig;
}

static void dfa_free(struct dfa *d) {
    for (uint32_t i = 0; i < d->n; i++) {
        free(d->st[i].sig);
        sset_free(&d->st[i].set);
        free(d->st[i].next);
    }
    free(d->st);
    free(d->index);
    memset(d, 0, sizeof *d);
}

/* the id of stack set x (added if new); -1 when out of room or memory */
static int32_t dfa_intern(struct dfa *d, const struct sset *x) {
    uint32_t sn;
    uint64_t h;
    uint32_t *sig = signature(x, &sn, &h);
    if (!sig) return -1;
    if (d->index_cap == 0) {
        d->index_cap = 2 * DFA_MAX;
        d->index = calloc(d->index_cap, sizeof *d->index);
        if (!d->index) {
            free(sig);
            d->index_cap = 0;
            return -1;
        }
    }
    uint32_t slot = (uint32_t)(h % d->index_cap);
    while (d->index[slot]) {
        const struct dfa_state *e = &d->st[d->index[slot] - 1];
        if (e->hash == h && e->sig_n == sn && !memcmp(e->sig, sig, sn * sizeof *sig)) {
            free(sig);
            return d->index[slot] - 1;
        }
        slot = (slot + 1) % d->index_cap;
    }
    if (d->n == DFA_MAX || !grow((void **)&d->st, &d->cap, d->n + 1, sizeof *d->st)) {
        free(sig);
        return -1;
    }
    struct dfa_state *e = &d->st[d->n];
    memset(e, 0, sizeof *e);
    e->sig = sig;
    e->sig_n = sn;
    e->hash = h;
    e->next = malloc(256 * sizeof *e->next);
    for (uint32_t i = 0; i < x->n; i++) sset_add(&e->set, x->data + x->s[i].off, x->s[i].n);
    if (!e->next || e->set.overflow) {
        free(e->next);
        free(sig);
        sset_free(&e->set);
        return -1;
    }
    for (int b = 0; b < 256; b++) e->next[b] = -2;
    d->index[slot] = (int32_t)d->n + 1;
    return (int32_t)d->n++;
}

struct walk {
    const struct lmc_grammar *g;
    struct dfa *dfa;
    const struct lmc_grammar_vocab *v;
    uint8_t *allowed;
    uint32_t *scratch;
    struct sset tmp;
    bool overflow;
};

static void walk(struct walk *w, int32_t id, uint32_t node, int depth) {
    const struct tnode *nd = &w->v->nodes[node];
    if (depth > 1024) {
        w->overflow = true;
        return;
    }
    for (uint32_t k = 0; k < nd->n_child && !w->overflow; k++) {
        uint32_t c = nd->child0 + k;
        const struct tnode *cn = &w->v->nodes[c];
        int32_t nid = w->dfa->st[id].next[cn->byte];
        if (nid == -2) { /* not computed yet */
            advance(w->g, &w->dfa->st[id].set, cn->byte, &w->tmp, w->scratch);
            if (w->tmp.overflow) {
                w->overflow = true;
                return;
            }
            nid = w->tmp.n ? dfa_intern(w->dfa, &w->tmp) : -1;
            if (w->tmp.n && nid < 0) {
                w->overflow = true;
                return;
            }
            w->dfa->st[id].next[cn->byte] = nid;
        }
        if (nid < 0) continue;
        for (int32_t t = cn->token; t >= 0; t = w->v->dup[t]) w->allowed[t] = 1;
        if (cn->n_child) walk(w, nid, c, depth + 1);
    }
}

lmc_status lmc_grammar_mask(struct lmc_grammar_state *s, struct lmc_grammar_vocab *v, uint8_t *allowed,
                            lmc_err *err) {
    if (s->cache_vocab != v->n_vocab) { /* the cache holds masks of one vocabulary */
        for (int i = 0; i < CACHE_SLOTS; i++) {
            free(s->cache[i].sig);
            free(s->cache[i].mask);
            memset(&s->cache[i], 0, sizeof s->cache[i]);
        }
        s->cache_vocab = v->n_vocab;
    }
    uint32_t sn = 0;
    uint64_t h = 0;
    uint32_t *sig = signature(&s->cur, &sn, &h);
    if (!sig) return lmc_err_set(err, LMC_ERR_OOM, "grammar: out of memory");
    for (int i = 0; i < CACHE_SLOTS; i++) {
        struct cache_entry *e = &s->cache[i];
        if (e->mask && e->key == h && e->sig_n == sn && !memcmp(e->sig, sig, sn * sizeof *sig)) {
            memcpy(allowed, e->mask, (size_t)v->n_vocab);
            free(sig);
            goto eos;
        }
    }
    memset(allowed, 0, (size_t)v->n_vocab);
    if (s->dfa.n > DFA_MAX / 2) dfa_free(&s->dfa); /* start over rather than fill up mid-walk */
    struct walk w = {s->g, &s->dfa, v, allowed, malloc(MAX_DEPTH * sizeof(uint32_t)), {0}, false};
    int32_t root = w.scratch ? dfa_intern(&s->dfa, &s->cur) : -1;
    if (root < 0) {
        free(w.scratch);
        free(sig);
        return lmc_err_set(err, LMC_ERR_OOM, "grammar: out of memory or parser states");
    }
    walk(&w, root, 0, 0);
    sset_free(&w.tmp);
    free(w.scratch);
    if (w.overflow) {
        free(sig);
        return lmc_err_set(err, LMC_ERR_ARG, "grammar: too many parse stacks or parser states while masking");
    }
    {
        struct cache_entry *e = &s->cache[s->cache_next++ % CACHE_SLOTS];
        free(e->sig);
        free(e->mask);
        e->sig = sig;
        e->sig_n = sn;
        e->key = h;
        e->mask = malloc((size_t)v->n_vocab);
        if (e->mask) memcpy(e->mask, allowed, (size_t)v->n_vocab);
    }
eos:
    for (int i = 0; i < v->n_eos; i++)
        if (v->eos[i] >= 0 && v->eos[i] < v->n_vocab) allowed[v->eos[i]] = lmc_grammar_can_end(s);
    for (int32_t i = 0; i < v->n_vocab; i++)
        if (allowed[i]) return LMC_OK;
    return lmc_err_set(err, LMC_ERR_ARG, "grammar: no token can continue the output (dead end)");
}
