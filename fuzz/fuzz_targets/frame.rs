#![no_main]
//! See `ordo_fuzz::frame`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo_fuzz::frame(data));
