#![no_main]
//! See `ordo_fuzz::block_stream`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo_fuzz::block_stream(data));
