#![no_main]
//! See `ordo_fuzz::receipt`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo_fuzz::receipt(data));
