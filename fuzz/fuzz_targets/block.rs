#![no_main]
//! See `ordo_fuzz::block`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo_fuzz::block(data));
