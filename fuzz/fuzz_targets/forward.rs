#![no_main]
//! See `ordo_fuzz::forward`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo_fuzz::forward(data));
