#![no_main]
//! See `ordo_fuzz::blocks`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo_fuzz::blocks(data));
