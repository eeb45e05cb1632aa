//! The container monitor's building blocks. `log_format` frames output in the CRI log format.

pub mod log_format;
