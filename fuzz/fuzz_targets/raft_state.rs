#![no_main]
//! See `ordo_fuzz::raft_state`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ordo_fuzz::raft_state(data));
