#![no_main]
//! See `ordo_fuzz::node_toml`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo_fuzz::node_toml(data));
