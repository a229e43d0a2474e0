//! Render: results to bytes (text, JSON, SVG). No I/O here; the CLI writes.
pub mod charts;
pub mod chrome;
pub mod dump;
pub mod folded;
pub mod json;
pub mod metrics;
pub mod perfetto;
pub mod svg;
pub mod text;
pub mod thread_table;
pub mod top;
