/*
 * discount_c: the tiered discount rule as a C guest, answering exactly as discount_wasm (Rust)
 * and discount_as (AssemblyScript) do.
 *
 * Input {price, customer_tier}; gold pays 80%, silver 90%, any other tier the full price.
 * The output is the price to pay, as a float. A missing or mistyped field is a 400.
 */
#include "mofa_guest.h"

static int32_t handle(mofa_reader *input, mofa_writer *output, mofa_error *error) {
    mofa_reader at;
    if (!mofa_map_find(input, "price", &at))
        return mofa_fail(error, 400, "missing field \"price\"");
    mofa_item price = mofa_read(&at);
    double p;
    switch (price.kind) {
    case MOFA_UINT: p = (double)price.u; break;
    case MOFA_INT: p = (double)price.i; break;
    case MOFA_FLOAT: p = price.f; break;
    default: return mofa_fail(error, 400, "price must be a number");
    }
    if (!(p - p == 0.0) || p < 0.0)
        return mofa_fail(error, 400, "price must be a finite number >= 0");
    if (!mofa_map_find(input, "customer_tier", &at))
        return mofa_fail(error, 400, "missing field \"customer_tier\"");
    mofa_item tier = mofa_read(&at);
    if (tier.kind != MOFA_STR)
        return mofa_fail(error, 400, "customer_tier must be a string");
    double factor = mofa_str_eq(&tier, "gold") ? 0.8 : mofa_str_eq(&tier, "silver") ? 0.9 : 1.0;
    mofa_write_f64(output, p * factor);
    return 0;
}

MOFA_EXPORT(handle)
