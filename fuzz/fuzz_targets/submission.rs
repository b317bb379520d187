#![no_main]
//! See `ordo_fuzz::submission`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo_fuzz::submission(data));
