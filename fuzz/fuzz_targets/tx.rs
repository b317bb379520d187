#![no_main]
//! See `ordo_fuzz::tx`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo_fuzz::tx(data));
