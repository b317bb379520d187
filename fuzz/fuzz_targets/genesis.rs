#![no_main]
//! See `ordo_fuzz::genesis`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo_fuzz::genesis(data));
