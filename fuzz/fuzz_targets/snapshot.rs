#![no_main]
//! See `ordo_fuzz::snapshot`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo_fuzz::snapshot(data));
