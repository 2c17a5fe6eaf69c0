//! Placeholder: the disk executor.
