//! Helpers shared by the integration tests: locating the built binaries, temp run folders.
