//! NCCL stand-in (not written yet).
