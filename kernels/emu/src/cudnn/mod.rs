//! cuDNN stand-in (not written yet).
