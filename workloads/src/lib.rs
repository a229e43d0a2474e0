//! The GIL lab: an "interpreter lock" that behaves like CPython's GIL, on ordinary futexes
//! (std `Mutex`/`Condvar`), with selectable policies; CPU spinner threads; a UDP echo server
//! and its client. It reproduces the convoy effect on demand and can log its own ground truth
//! (`--truth`) so gil-trace's analysis can be checked against what really happened.
pub mod clock;
pub mod echo;
pub mod experiment;
pub mod fixture;
pub mod gil;
pub mod spinner;
pub mod stats;
pub mod truth;
pub mod validate;
