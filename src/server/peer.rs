//! Placeholder: the peer transport.
