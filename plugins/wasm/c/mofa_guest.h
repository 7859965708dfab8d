/*
 * mofa_guest.h: the mofa-bus WASM ABI for C guests, header-only and freestanding (no libc).
 *
 * A plugin includes this header once, defines
 *
 *     int32_t handle(mofa_reader *input, mofa_writer *output, mofa_error *error);
 *
 * and adds MOFA_EXPORT(handle). The handler reads the MessagePack request with the
 * mofa_read_* / mofa_map_find helpers, writes one MessagePack value with the mofa_write_*
 * helpers and returns 0, or fills `error` (code and message) and returns -1. The macro exports
 * `mofa_alloc` and `mofa_handle` as plugins/wasm/ABI.md describes; the linker exports `memory`.
 *
 * Memory is a bump allocator over the module's own linear memory: each request runs in a fresh
 * instance, so nothing is ever freed. Build (Debian: clang, lld):
 *
 *     clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -Wl,--export=mofa_alloc \
 *           -Wl,--export=mofa_handle -o plugin.wasm plugin.c
 *
 * Hand-written on purpose: a guest needs only this much MessagePack (maps, strings, numbers),
 * and a freestanding header keeps modules small and free of any import.
 */
#ifndef MOFA_GUEST_H
#define MOFA_GUEST_H

#include <stddef.h>
#include <stdint.h>

/* ---- memory ------------------------------------------------------------------------------ */

extern unsigned char __heap_base;
static uintptr_t mofa_heap_top;

/* `len` bytes of fresh memory, growing the linear memory when needed; 0 when it cannot grow
 * (the host then reports the module's memory cap). */
static inline void *mofa_malloc(size_t len) {
    if (mofa_heap_top == 0) mofa_heap_top = (uintptr_t)&__heap_base;
    uintptr_t start = (mofa_heap_top + 7) & ~(uintptr_t)7;
    uintptr_t end = start + len;
    uintptr_t have = __builtin_wasm_memory_size(0) * 65536;
    if (end > have) {
        size_t pages = (end - have + 65535) / 65536;
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) return 0;
    }
    mofa_heap_top = end;
    return (void *)start;
}

static inline void mofa_copy(unsigned char *to, const unsigned char *from, size_t len) {
    for (size_t i = 0; i < len; i++) to[i] = from[i];
}

static inline size_t mofa_strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

/* ---- errors ------------------------------------------------------------------------------ */

typedef struct {
    uint16_t code;       /* 400 bad input, 500 failure */
    const char *message; /* NUL-terminated UTF-8 */
} mofa_error;

static inline int32_t mofa_fail(mofa_error *error, uint16_t code, const char *message) {
    error->code = code;
    error->message = message;
    return -1;
}

/* ---- reading MessagePack ----------------------------------------------------------------- */

typedef struct {
    const unsigned char *at;
    const unsigned char *end;
} mofa_reader;

typedef enum {
    MOFA_NIL, MOFA_BOOL, MOFA_INT, MOFA_UINT, MOFA_FLOAT, MOFA_STR, MOFA_BIN,
    MOFA_ARRAY, MOFA_MAP, MOFA_EXT, MOFA_INVALID
} mofa_kind;

/* One decoded item. For containers `len` is the element (array) or pair (map) count and the
 * reader stands at the first element; for str and bin `bytes`/`len` point into the input. */
typedef struct {
    mofa_kind kind;
    int boolean;
    int64_t i;
    uint64_t u;
    double f;
    const unsigned char *bytes;
    uint32_t len;
} mofa_item;

static inline int mofa_take(mofa_reader *r, size_t n, const unsigned char **out) {
    if ((size_t)(r->end - r->at) < n) return 0;
    *out = r->at;
    r->at += n;
    return 1;
}

static inline uint64_t mofa_be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* Reads one item header; kind MOFA_INVALID on malformed or truncated input. */
static inline mofa_item mofa_read(mofa_reader *r) {
    mofa_item it = {MOFA_INVALID, 0, 0, 0, 0.0, 0, 0};
    const unsigned char *p;
    if (!mofa_take(r, 1, &p)) return it;
    unsigned char b = *p;
    int n = 0; /* size of a length or value field that follows */
    if (b <= 0x7f) { it.kind = MOFA_UINT; it.u = b; return it; }
    if (b >= 0xe0) { it.kind = MOFA_INT; it.i = (int8_t)b; return it; }
    if ((b & 0xf0) == 0x80) { it.kind = MOFA_MAP; it.len = b & 0x0f; return it; }
    if ((b & 0xf0) == 0x90) { it.kind = MOFA_ARRAY; it.len = b & 0x0f; return it; }
    if ((b & 0xe0) == 0xa0) { it.kind = MOFA_STR; it.len = b & 0x1f; goto bytes; }
    switch (b) {
    case 0xc0: it.kind = MOFA_NIL; return it;
    case 0xc2: case 0xc3: it.kind = MOFA_BOOL; it.boolean = b == 0xc3; return it;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        n = 1 << (b - 0xcc);
        if (!mofa_take(r, n, &p)) return it;
        it.kind = MOFA_UINT; it.u = mofa_be(p, n); return it;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        n = 1 << (b - 0xd0);
        if (!mofa_take(r, n, &p)) return it;
        uint64_t raw = mofa_be(p, n);
        int shift = 64 - 8 * n;
        it.kind = MOFA_INT; it.i = (int64_t)(raw << shift) >> shift; return it;
    }
    case 0xca: {
        if (!mofa_take(r, 4, &p)) return it;
        union { uint32_t u; float f; } c = {(uint32_t)mofa_be(p, 4)};
        it.kind = MOFA_FLOAT; it.f = c.f; return it;
    }
    case 0xcb: {
        if (!mofa_take(r, 8, &p)) return it;
        union { uint64_t u; double f; } c = {mofa_be(p, 8)};
        it.kind = MOFA_FLOAT; it.f = c.f; return it;
    }
    case 0xd9: case 0xda: case 0xdb:
        n = 1 << (b - 0xd9);
        if (!mofa_take(r, n, &p)) return it;
        it.kind = MOFA_STR; it.len = (uint32_t)mofa_be(p, n); goto bytes;
    case 0xc4: case 0xc5: case 0xc6:
        n = 1 << (b - 0xc4);
        if (!mofa_take(r, n, &p)) return it;
        it.kind = MOFA_BIN; it.len = (uint32_t)mofa_be(p, n); goto bytes;
    case 0xdc: case 0xdd:
        n = 2 << (b - 0xdc);
        if (!mofa_take(r, n, &p)) return it;
        it.kind = MOFA_ARRAY; it.len = (uint32_t)mofa_be(p, n); return it;
    case 0xde: case 0xdf:
        n = 2 << (b - 0xde);
        if (!mofa_take(r, n, &p)) return it;
        it.kind = MOFA_MAP; it.len = (uint32_t)mofa_be(p, n); return it;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        it.len = 1u << (b - 0xd4); /* fixext: type byte + 1..16 data bytes */
        if (!mofa_take(r, 1 + it.len, &p)) return it;
        it.kind = MOFA_EXT; return it;
    case 0xc7: case 0xc8: case 0xc9:
        n = 1 << (b - 0xc7);
        if (!mofa_take(r, n, &p)) return it;
        it.len = (uint32_t)mofa_be(p, n);
        if (!mofa_take(r, 1 + (size_t)it.len, &p)) return it;
        it.kind = MOFA_EXT; return it;
    default:
        return it; /* 0xc1 is never used */
    }
bytes:
    if (!mofa_take(r, it.len, &p)) { it.kind = MOFA_INVALID; return it; }
    it.bytes = p;
    return it;
}

/* Skips one whole value, containers included; 0 on malformed input. */
static inline int mofa_skip(mofa_reader *r, int depth) {
    if (depth > 256) return 0;
    mofa_item it = mofa_read(r);
    if (it.kind == MOFA_INVALID) return 0;
    uint64_t children = it.kind == MOFA_ARRAY ? it.len : it.kind == MOFA_MAP ? 2ull * it.len : 0;
    for (uint64_t i = 0; i < children; i++)
        if (!mofa_skip(r, depth + 1)) return 0;
    return 1;
}

static inline int mofa_str_eq(const mofa_item *it, const char *s) {
    size_t n = mofa_strlen(s);
    if (it->kind != MOFA_STR || it->len != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (it->bytes[i] != (unsigned char)s[i]) return 0;
    return 1;
}

/* Finds the first `key` (a string key) of the map at the start of `input`. On success `value`
 * reads that key's value and 1 is returned; 0 when the input is not a map or has no such key. */
static inline int mofa_map_find(const mofa_reader *input, const char *key, mofa_reader *value) {
    mofa_reader r = *input;
    mofa_item map = mofa_read(&r);
    if (map.kind != MOFA_MAP) return 0;
    for (uint32_t i = 0; i < map.len; i++) {
        mofa_reader at_key = r;
        mofa_item k = mofa_read(&at_key);
        if (k.kind == MOFA_INVALID) return 0;
        if (mofa_str_eq(&k, key)) {
            *value = at_key;
            return 1;
        }
        if (!mofa_skip(&r, 1) || !mofa_skip(&r, 1)) return 0;
    }
    return 0;
}

/* ---- writing MessagePack ----------------------------------------------------------------- */

typedef struct {
    unsigned char *buf;
    size_t len;
    size_t cap;
    int failed; /* memory could not grow */
} mofa_writer;

static inline void mofa_put(mofa_writer *w, const unsigned char *bytes, size_t n) {
    if (w->failed) return;
    if (w->len + n > w->cap) {
        size_t cap = (w->cap ? w->cap * 2 : 64);
        while (cap < w->len + n) cap *= 2;
        unsigned char *grown = mofa_malloc(cap);
        if (!grown) { w->failed = 1; return; }
        mofa_copy(grown, w->buf, w->len);
        w->buf = grown;
        w->cap = cap;
    }
    mofa_copy(w->buf + w->len, bytes, n);
    w->len += n;
}

static inline void mofa_put_be(mofa_writer *w, unsigned char tag, uint64_t v, int n) {
    unsigned char b[9];
    b[0] = tag;
    for (int i = 0; i < n; i++) b[1 + i] = (unsigned char)(v >> (8 * (n - 1 - i)));
    mofa_put(w, b, 1 + (size_t)n);
}

static inline void mofa_write_nil(mofa_writer *w) { mofa_put_be(w, 0xc0, 0, 0); }

static inline void mofa_write_bool(mofa_writer *w, int b) { mofa_put_be(w, b ? 0xc3 : 0xc2, 0, 0); }

static inline void mofa_write_f64(mofa_writer *w, double f) {
    union { double f; uint64_t u; } c = {f};
    mofa_put_be(w, 0xcb, c.u, 8);
}

static inline void mofa_write_uint(mofa_writer *w, uint64_t v) {
    if (v <= 0x7f) mofa_put_be(w, (unsigned char)v, 0, 0);
    else if (v <= 0xff) mofa_put_be(w, 0xcc, v, 1);
    else if (v <= 0xffff) mofa_put_be(w, 0xcd, v, 2);
    else if (v <= 0xffffffffull) mofa_put_be(w, 0xce, v, 4);
    else mofa_put_be(w, 0xcf, v, 8);
}

static inline void mofa_write_str_n(mofa_writer *w, const char *s, size_t n) {
    if (n <= 31) mofa_put_be(w, (unsigned char)(0xa0 | n), 0, 0);
    else if (n <= 0xff) mofa_put_be(w, 0xd9, n, 1);
    else if (n <= 0xffff) mofa_put_be(w, 0xda, n, 2);
    else mofa_put_be(w, 0xdb, n, 4);
    mofa_put(w, (const unsigned char *)s, n);
}

static inline void mofa_write_str(mofa_writer *w, const char *s) { mofa_write_str_n(w, s, mofa_strlen(s)); }

/* A map header; write `pairs` keys and values after it. */
static inline void mofa_write_map(mofa_writer *w, uint32_t pairs) {
    if (pairs <= 15) mofa_put_be(w, (unsigned char)(0x80 | pairs), 0, 0);
    else if (pairs <= 0xffff) mofa_put_be(w, 0xde, pairs, 2);
    else mofa_put_be(w, 0xdf, pairs, 4);
}

/* An array header; write `items` values after it. */
static inline void mofa_write_array(mofa_writer *w, uint32_t items) {
    if (items <= 15) mofa_put_be(w, (unsigned char)(0x90 | items), 0, 0);
    else if (items <= 0xffff) mofa_put_be(w, 0xdc, items, 2);
    else mofa_put_be(w, 0xdd, items, 4);
}

/* ---- the ABI ----------------------------------------------------------------------------- */

#define MOFA_ERROR_FLAG (1ull << 63)

static inline int64_t mofa_pack(const mofa_writer *w, int error) {
    uint64_t packed = ((uint64_t)(uintptr_t)w->buf << 32) | (uint32_t)w->len;
    return (int64_t)(error ? (packed | MOFA_ERROR_FLAG) : packed);
}

static inline int64_t mofa_error_reply(const mofa_error *e) {
    mofa_writer w = {0, 0, 0, 0};
    mofa_write_map(&w, 2);
    mofa_write_str(&w, "code");
    mofa_write_uint(&w, e->code);
    mofa_write_str(&w, "message");
    mofa_write_str(&w, e->message ? e->message : "");
    return mofa_pack(&w, 1);
}

#define MOFA_EXPORT(handler)                                                                   \
    __attribute__((export_name("mofa_alloc"))) int32_t mofa_alloc(int32_t len) {               \
        return (int32_t)(uintptr_t)mofa_malloc((size_t)(uint32_t)len);                         \
    }                                                                                          \
    __attribute__((export_name("mofa_handle"))) int64_t mofa_handle(int32_t ptr, int32_t len) { \
        mofa_reader input = {(const unsigned char *)(uintptr_t)ptr,                             \
                             (const unsigned char *)(uintptr_t)ptr + (uint32_t)len};            \
        mofa_writer output = {0, 0, 0, 0};                                                     \
        mofa_error error = {500, "handler failed"};                                            \
        if (handler(&input, &output, &error) != 0) return mofa_error_reply(&error);            \
        if (output.failed) {                                                                   \
            mofa_error oom = {500, "out of memory while writing the output"};                  \
            return mofa_error_reply(&oom);                                                     \
        }                                                                                      \
        return mofa_pack(&output, 0);                                                          \
    }

#endif
