//! The card-number guard over any JSON document: its output parses and no
//! full card number is left in any string, number or JSON raw body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hookgate_fuzz::guard_and_check(data);
});
