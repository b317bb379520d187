#![no_main]
//! See `ordo_fuzz::raft`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo_fuzz::raft(data));
