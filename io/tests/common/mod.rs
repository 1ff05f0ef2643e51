//! Helpers shared by the io integration tests: the workspace's test kit
//! (C git with an isolated configuration and fixed identities and dates,
//! the corpus beside the checkout).
#![allow(dead_code, unused_imports)]

pub use guts_testkit::{corpus_bundle, git, git_bytes, git_run};
