//! Loom models of the handoff live in tests/.
