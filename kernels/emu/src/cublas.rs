//! cuBLAS stand-in (not written yet).
