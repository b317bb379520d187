#![no_main]
//! See `ordo_fuzz::key_file`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo_fuzz::key_file(data));
