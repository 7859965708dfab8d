// mofa.ts: the mofa-bus WASM ABI (plugins/wasm/ABI.md) for AssemblyScript guests.
//
// A plugin exports `mofa_alloc` (use `alloc` below) and `mofa_handle`, reads its MessagePack
// request with `Reader` and answers with `ok(writer)` or `fail(code, message)`. Build with the
// stub runtime (`--runtime stub`): each request runs in a fresh instance, so nothing is freed,
// and with `--use abort=` so the module imports nothing.
//
// Hand-written on purpose: a guest needs only this much MessagePack, and AssemblyScript's
// packages for it bring a garbage-collected runtime the ABI does not need.

const ERROR_FLAG: u64 = 1 << 63;

/** `len` bytes of fresh memory, for `mofa_alloc`. */
export function alloc(len: i32): i32 {
  return <i32>heap.alloc(<usize>len);
}

export const enum Kind { Nil, Bool, Int, Uint, Float, Str, Bin, Array, Map, Ext, Invalid }

/** One decoded item. Containers: `len` elements (array) or pairs (map) follow. Str and bin:
 * `len` bytes at `ptr`. */
export class Item {
  kind: Kind = Kind.Invalid;
  boolean: bool = false;
  i: i64 = 0;
  u: u64 = 0;
  f: f64 = 0;
  ptr: usize = 0;
  len: u32 = 0;
}

function be(p: usize, n: i32): u64 {
  let v: u64 = 0;
  for (let i = 0; i < n; i++) v = (v << 8) | <u64>load<u8>(p + <usize>i);
  return v;
}

/** Reads MessagePack from guest memory. */
export class Reader {
  constructor(public at: usize, public end: usize) {}

  private take(n: usize): usize {
    if (this.end - this.at < n) return 0;
    const p = this.at;
    this.at += n;
    return p;
  }

  /** One item header; kind Invalid on malformed or truncated input. */
  read(): Item {
    const it = new Item();
    if (this.at >= this.end) return it;
    const b = <u32>load<u8>(this.take(1));
    let p: usize = 0;
    let n: i32 = 0;
    if (b <= 0x7f) { it.kind = Kind.Uint; it.u = b; return it; }
    if (b >= 0xe0) { it.kind = Kind.Int; it.i = <i64><i8>b; return it; }
    if ((b & 0xf0) == 0x80) { it.kind = Kind.Map; it.len = b & 0x0f; return it; }
    if ((b & 0xf0) == 0x90) { it.kind = Kind.Array; it.len = b & 0x0f; return it; }
    if ((b & 0xe0) == 0xa0) { it.len = b & 0x1f; return this.bytes(it, Kind.Str); }
    if (b == 0xc0) { it.kind = Kind.Nil; return it; }
    if (b == 0xc2 || b == 0xc3) { it.kind = Kind.Bool; it.boolean = b == 0xc3; return it; }
    if (b >= 0xcc && b <= 0xcf) {
      n = 1 << (b - 0xcc);
      if ((p = this.take(n)) == 0) return it;
      it.kind = Kind.Uint; it.u = be(p, n); return it;
    }
    if (b >= 0xd0 && b <= 0xd3) {
      n = 1 << (b - 0xd0);
      if ((p = this.take(n)) == 0) return it;
      const shift = <u64>(64 - 8 * n);
      it.kind = Kind.Int; it.i = (<i64>(be(p, n) << shift)) >> shift; return it;
    }
    if (b == 0xca) {
      if ((p = this.take(4)) == 0) return it;
      it.kind = Kind.Float; it.f = <f64>reinterpret<f32>(<u32>be(p, 4)); return it;
    }
    if (b == 0xcb) {
      if ((p = this.take(8)) == 0) return it;
      it.kind = Kind.Float; it.f = reinterpret<f64>(be(p, 8)); return it;
    }
    if (b >= 0xd9 && b <= 0xdb) {
      n = 1 << (b - 0xd9);
      if ((p = this.take(n)) == 0) return it;
      it.len = <u32>be(p, n); return this.bytes(it, Kind.Str);
    }
    if (b >= 0xc4 && b <= 0xc6) {
      n = 1 << (b - 0xc4);
      if ((p = this.take(n)) == 0) return it;
      it.len = <u32>be(p, n); return this.bytes(it, Kind.Bin);
    }
    if (b == 0xdc || b == 0xdd) {
      n = 2 << (b - 0xdc);
      if ((p = this.take(n)) == 0) return it;
      it.kind = Kind.Array; it.len = <u32>be(p, n); return it;
    }
    if (b == 0xde || b == 0xdf) {
      n = 2 << (b - 0xde);
      if ((p = this.take(n)) == 0) return it;
      it.kind = Kind.Map; it.len = <u32>be(p, n); return it;
    }
    if (b >= 0xd4 && b <= 0xd8) {
      if (this.take(1 + (<usize>1 << (b - 0xd4))) == 0) return it;
      it.kind = Kind.Ext; return it;
    }
    if (b >= 0xc7 && b <= 0xc9) {
      n = 1 << (b - 0xc7);
      if ((p = this.take(n)) == 0) return it;
      if (this.take(1 + <usize>be(p, n)) == 0) return it;
      it.kind = Kind.Ext; return it;
    }
    return it; // 0xc1 is never used
  }

  private bytes(it: Item, kind: Kind): Item {
    if (this.end - this.at < <usize>it.len) return it;
    it.ptr = this.at;
    this.at += <usize>it.len;
    it.kind = kind;
    return it;
  }

  /** Skips one whole value, containers included; false on malformed input. */
  skip(depth: i32 = 0): bool {
    if (depth > 256) return false;
    const it = this.read();
    if (it.kind == Kind.Invalid) return false;
    const children: u64 = it.kind == Kind.Array ? <u64>it.len : it.kind == Kind.Map ? 2 * <u64>it.len : 0;
    for (let i: u64 = 0; i < children; i++) if (!this.skip(depth + 1)) return false;
    return true;
  }

  /** A reader at the value of the first string `key` of the map this reader stands at, or
   * null when it is not a map or has no such key. */
  find(key: string): Reader | null {
    const r = new Reader(this.at, this.end);
    const map = r.read();
    if (map.kind != Kind.Map) return null;
    for (let i: u32 = 0; i < map.len; i++) {
      const value = new Reader(r.at, r.end);
      const k = value.read();
      if (k.kind == Kind.Invalid) return null;
      if (strEquals(k, key)) return value;
      if (!r.skip() || !r.skip()) return null;
    }
    return null;
  }
}

/** Whether a string item holds exactly `s` (UTF-8). */
export function strEquals(it: Item, s: string): bool {
  if (it.kind != Kind.Str) return false;
  const utf8 = String.UTF8.encode(s);
  if (<u32>utf8.byteLength != it.len) return false;
  return memory.compare(it.ptr, changetype<usize>(utf8), <usize>it.len) == 0;
}

/** Builds one MessagePack value in guest memory. */
export class Writer {
  ptr: usize = 0;
  len: usize = 0;
  cap: usize = 0;

  private reserve(n: usize): usize {
    if (this.len + n > this.cap) {
      let cap = this.cap > 0 ? this.cap * 2 : 64;
      while (cap < this.len + n) cap *= 2;
      const grown = heap.alloc(cap);
      memory.copy(grown, this.ptr, this.len);
      this.ptr = grown;
      this.cap = cap;
    }
    const at = this.ptr + this.len;
    this.len += n;
    return at;
  }

  private tagged(tag: u8, v: u64, n: i32): void {
    const p = this.reserve(1 + <usize>n);
    store<u8>(p, tag);
    for (let i = 0; i < n; i++) store<u8>(p + 1 + <usize>i, <u8>(v >> (8 * <u64>(n - 1 - i))));
  }

  nil(): void { this.tagged(0xc0, 0, 0); }
  bool(b: bool): void { this.tagged(b ? 0xc3 : 0xc2, 0, 0); }
  f64(f: f64): void { this.tagged(0xcb, reinterpret<u64>(f), 8); }

  uint(v: u64): void {
    if (v <= 0x7f) this.tagged(<u8>v, 0, 0);
    else if (v <= 0xff) this.tagged(0xcc, v, 1);
    else if (v <= 0xffff) this.tagged(0xcd, v, 2);
    else if (v <= 0xffffffff) this.tagged(0xce, v, 4);
    else this.tagged(0xcf, v, 8);
  }

  str(s: string): void {
    const utf8 = String.UTF8.encode(s);
    const n = <u64>utf8.byteLength;
    if (n <= 31) this.tagged(<u8>(0xa0 | <u32>n), 0, 0);
    else if (n <= 0xff) this.tagged(0xd9, n, 1);
    else if (n <= 0xffff) this.tagged(0xda, n, 2);
    else this.tagged(0xdb, n, 4);
    memory.copy(this.reserve(<usize>n), changetype<usize>(utf8), <usize>n);
  }

  /** A map header: write `pairs` keys and values after it. */
  map(pairs: u32): void {
    if (pairs <= 15) this.tagged(<u8>(0x80 | pairs), 0, 0);
    else if (pairs <= 0xffff) this.tagged(0xde, pairs, 2);
    else this.tagged(0xdf, pairs, 4);
  }

  /** An array header: write `items` values after it. */
  array(items: u32): void {
    if (items <= 15) this.tagged(<u8>(0x90 | items), 0, 0);
    else if (items <= 0xffff) this.tagged(0xdc, items, 2);
    else this.tagged(0xdd, items, 4);
  }
}

function pack(w: Writer, error: bool): i64 {
  const packed = (<u64>w.ptr << 32) | <u64>w.len;
  return <i64>(error ? packed | ERROR_FLAG : packed);
}

/** The reply `mofa_handle` returns for an output written into `w`. */
export function ok(w: Writer): i64 {
  return pack(w, false);
}

/** The reply `mofa_handle` returns for an error: 400 bad input, 500 failure. */
export function fail(code: u32, message: string): i64 {
  const w = new Writer();
  w.map(2);
  w.str("code");
  w.uint(code);
  w.str("message");
  w.str(message);
  return pack(w, true);
}
