// discount_as: the tiered discount rule as an AssemblyScript guest, answering exactly as
// discount_wasm (Rust) and discount_c (C) do.
//
// Input {price, customer_tier}; gold pays 80%, silver 90%, any other tier the full price.
// The output is the price to pay, as a float. A missing or mistyped field is a 400.

import { alloc, fail, Kind, ok, Reader, strEquals, Writer } from "./mofa";

export function mofa_alloc(len: i32): i32 {
  return alloc(len);
}

export function mofa_handle(ptr: i32, len: i32): i64 {
  const input = new Reader(<usize>ptr, <usize>ptr + <usize><u32>len);
  const at = input.find("price");
  if (at == null) return fail(400, 'missing field "price"');
  const price = at.read();
  let p: f64;
  if (price.kind == Kind.Uint) p = <f64>price.u;
  else if (price.kind == Kind.Int) p = <f64>price.i;
  else if (price.kind == Kind.Float) p = price.f;
  else return fail(400, "price must be a number");
  if (!isFinite(p) || p < 0.0) return fail(400, "price must be a finite number >= 0");
  const tierAt = input.find("customer_tier");
  if (tierAt == null) return fail(400, 'missing field "customer_tier"');
  const tier = tierAt.read();
  if (tier.kind != Kind.Str) return fail(400, "customer_tier must be a string");
  const factor = strEquals(tier, "gold") ? 0.8 : strEquals(tier, "silver") ? 0.9 : 1.0;
  const out = new Writer();
  out.f64(p * factor);
  return ok(out);
}
