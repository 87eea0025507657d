/* grammar.h — grammar-constrained decoding: a context-free grammar over
 * bytes (rules of alternatives of sequences of byte sets and rule
 * references; no left recursion), a parse state (the set of pushdown stacks
 * still alive after the bytes so far), and the token mask: which vocabulary
 * entries (as byte strings) can continue a valid prefix, computed by
 * walking a byte trie of the vocabulary, with a per-state cache. JSON
 * Schema compiles to such a grammar (grammar_schema.c). */
#ifndef LMC_GRAMMAR_H
#define LMC_GRAMMAR_H

#include "lmc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lmc_grammar;
struct lmc_grammar_state;
struct lmc_grammar_vocab;

/* ---- building a grammar ---- */
lmc_status lmc_grammar_new(struct lmc_grammar **out, lmc_err *err);
void lmc_grammar_free(struct lmc_grammar *g);
/* A new rule (no alternatives yet); returns its id or -1 on failure. */
int lmc_grammar_rule(struct lmc_grammar *g, const char *name);
/* Alternatives are built element by element: begin, add, end. */
void lmc_grammar_alt_begin(struct lmc_grammar *g, int rule);
void lmc_grammar_add_bytes(struct lmc_grammar *g, const uint8_t lo_hi[][2], int n_ranges, bool negate);
void lmc_grammar_add_literal(struct lmc_grammar *g, const char *s, size_t n);
void lmc_grammar_add_rule(struct lmc_grammar *g, int rule);
void lmc_grammar_alt_end(struct lmc_grammar *g);
/* Checks the grammar (every rule has an alternative, no left recursion) and
 * sets the start rule. */
lmc_status lmc_grammar_finish(struct lmc_grammar *g, int start, lmc_err *err);

/* JSON Schema (a JSON text) -> grammar: type (object with properties and
 * required, array with items/minItems/maxItems, string with
 * minLength/maxLength/pattern/enum/const, integer, number, boolean, null, type
 * lists), enum, const, anyOf/oneOf, $ref to #/$defs or #/definitions,
 * nullable. Unsupported keywords are an error naming them. */
lmc_status lmc_grammar_from_json_schema(const char *schema, size_t n, struct lmc_grammar **out, lmc_err *err);
/* A rule for a JSON string (quotes included) whose value matches an
 * ECMA-262 regular expression of the common kinds (grammar_regex.c lists
 * them); -1 with err naming the construct otherwise. */
int lmc_grammar_regex_string(struct lmc_grammar *g, const char *pattern, size_t n, lmc_err *err);
/* The same with the string's length in characters within [min_len,
 * max_len] (max_len < 0: unbounded); the bound that counts (max_len, or
 * min_len without one) must be <= 256. */
int lmc_grammar_regex_string_len(struct lmc_grammar *g, const char *pattern, size_t n, int64_t min_len,
                                 int64_t max_len, lmc_err *err);
/* GBNF text (llama.cpp's notation; start rule `root`; grammar_gbnf.c lists
 * what is supported). Errors name the line. */
lmc_status lmc_grammar_from_gbnf(const char *text, size_t n, struct lmc_grammar **out, lmc_err *err);
/* Any JSON object (response_format json_object). */
lmc_status lmc_grammar_json_object(struct lmc_grammar **out, lmc_err *err);

/* ---- parsing ---- */
lmc_status lmc_grammar_state_new(const struct lmc_grammar *g, struct lmc_grammar_state **out, lmc_err *err);
void lmc_grammar_state_free(struct lmc_grammar_state *s);
/* Advances by bytes; false (state unchanged) if they cannot continue a
 * valid prefix. */
bool lmc_grammar_accept(struct lmc_grammar_state *s, const char *bytes, size_t n);
/* The bytes so far form a complete sentence. */
bool lmc_grammar_can_end(const struct lmc_grammar_state *s);
/* The bytes so far can still be extended. */
bool lmc_grammar_can_continue(const struct lmc_grammar_state *s);

/* ---- token masks ---- */
/* tokens[i] (len[i] bytes) for each id; eos ids may end a complete sentence. */
lmc_status lmc_grammar_vocab_new(const char *const *tokens, const size_t *len, int32_t n_vocab, const int32_t *eos,
                                 int n_eos, struct lmc_grammar_vocab **out, lmc_err *err);
void lmc_grammar_vocab_free(struct lmc_grammar_vocab *v);
/* Advances by token id's bytes (an eos id: only checks the sentence is complete). */
bool lmc_grammar_accept_token(struct lmc_grammar_state *s, const struct lmc_grammar_vocab *v, int32_t id);
/* The vocabulary of a tokenizer: each id's bytes as decode([id]) gives them,
 * special tokens none (never allowed) except the eos ids. */
struct lmc_tokenizer;
lmc_status lmc_grammar_vocab_from_tokenizer(const struct lmc_tokenizer *t, int64_t n_vocab, const int32_t *eos,
                                            int n_eos, struct lmc_grammar_vocab **out, lmc_err *err);
/* allowed[id] = 1 if token id can follow the state. LMC_ERR_ARG when no
 * token is allowed (a dead end). */
lmc_status lmc_grammar_mask(struct lmc_grammar_state *s, struct lmc_grammar_vocab *v, uint8_t *allowed,
                            lmc_err *err);

#endif
