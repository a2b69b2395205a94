//! Finding the CUDA libraries on disk, without asking the user for environment variables.
//!
//! cudarc opens every library by a fixed list of file names through the ordinary loader search
//! (`lib<name>.so`, then `lib<name>.so.13`, `.12`, `.11`, `.10`, `.9`, `.1`: its
//! `get_lib_name_candidates`), so a library that exists only as `libnccl.so.2`, or in a folder
//! that is not on the loader's path (NVIDIA's Python wheels, a toolkit under `CUDA_HOME`), is
//! never found. This module:
//! - `search`: looks for each library in the usual places (see [`search::Roots`]) and reads its
//!   version from the file name;
//! - `bridge`: makes a private folder of links under the names cudarc tries, and puts it and the
//!   libraries' own folders (NVRTC's builtins, cuDNN's sub-libraries, cuBLASLt live next to
//!   them) first on `LD_LIBRARY_PATH`. The loader reads that variable once, at process start, so
//!   [`bridge::prepare_process`] re-executes the program once with it set; processes the program
//!   spawns inherit it. Workers started by hand or under SLURM do the same at their own start.
//!
//! Seen only on this project's emulated CUDA device and stand-in folders (tests/tests/doctor.rs);
//! the wheel and toolkit layouts follow NVIDIA's published wheels and toolkit (reported, not run
//! against a real GPU here).

pub mod bridge;
pub mod search;

pub use bridge::{prepare_process, Prepared};
pub use search::{discover, Discovery, Found, Lib, Roots};

/// The command that installs what is missing, as the doctor and the errors print it.
pub const SETUP_COMMAND: &str = "scripts/setup_gpu.sh";

/// Whether cudarc can open `lib` in this process (it tries its own names only, through the
/// loader's search, which reads `LD_LIBRARY_PATH` as it was when the process started).
pub fn loadable(lib: Lib) -> bool {
    // SAFETY: each is_culib_present only tries to dlopen cudarc's candidate names and drops
    // the handles; none calls a library function.
    unsafe {
        match lib {
            Lib::Driver => cudarc::driver::sys::is_culib_present(),
            Lib::Nvrtc => cudarc::nvrtc::sys::is_culib_present(),
            Lib::Cublas => cudarc::cublas::sys::is_culib_present(),
            Lib::Cudnn => cudarc::cudnn::sys::is_culib_present(),
            Lib::Nccl => cudarc::nccl::sys::is_culib_present(),
        }
    }
}
