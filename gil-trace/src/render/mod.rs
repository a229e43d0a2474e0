//! Render: results to bytes (text, JSON). No I/O here; the CLI writes.
pub mod json;
pub mod text;
