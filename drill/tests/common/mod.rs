//! Shared by the drill tests: an independent client to hold the drill's figures against.
#![allow(dead_code)]

pub mod probe;
