//! gil-trace: see lock convoys (CPython's GIL convoy effect and its kin) from kernel truth.
//!
//! The crate follows the data: [`capture`] (eBPF programs → events) writes a [`trace`] file;
//! everything after reads that file: [`model`] rebuilds per-thread timelines,
//! [`analysis`] computes handoffs, stalls and convoys (pure functions), [`render`] turns results
//! into text and JSON (bytes; [`cli`], the command line, writes them).
pub mod analysis;
pub mod capture;
pub mod cli;
pub mod model;
pub mod pipeline;
pub mod render;
pub mod symbols;
pub mod trace;

#[cfg(test)]
mod testing;
