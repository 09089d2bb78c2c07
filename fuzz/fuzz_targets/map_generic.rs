//! A config-defined (`generic`) source: any authenticated body, evaluated
//! through a `[source.map]`, maps or becomes `unmapped`, never panics, and
//! the published event is parseable JSON with a complete envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hookgate_fuzz::map_and_check(hookgate::vendors::VendorKind::Generic, data);
});
