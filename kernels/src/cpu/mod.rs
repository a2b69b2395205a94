//! The CPU reference backend (work in progress).
