//! Tidy checks (written by the docs work).
