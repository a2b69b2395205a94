//! Reading a module image as the driver would: a CUBIN (ELF) from NVRTC, or PTX text. The
//! emulator cannot run the machine code, so a module is its list of entry points, each bound
//! to the host twin of the same name (see `kernels.rs`), and each kernel's static shared
//! memory, which the launch checks against the device's limit.

use object::{Object, ObjectSection, ObjectSymbol, SymbolFlags, SymbolKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// Bytes of `__shared__` memory the kernel declares (the CUBIN's `.nv.shared.NAME`).
    pub static_shared: usize,
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// The length of an ELF64 image that starts at `image` (cuModuleLoadData gets no size): the
/// furthest end of its section header table, program header table and section contents.
///
/// # Safety
/// `image` must point at a readable ELF64 image.
pub unsafe fn elf_len(image: *const u8) -> Option<usize> {
    // SAFETY: an ELF64 header is 64 bytes, readable per the caller's promise.
    let hdr = unsafe { std::slice::from_raw_parts(image, 64) };
    if &hdr[..4] != b"\x7fELF" || hdr[4] != 2 {
        return None;
    }
    let phoff = read_u64(hdr, 0x20)? as usize;
    let shoff = read_u64(hdr, 0x28)? as usize;
    let phentsize = read_u16(hdr, 0x36)? as usize;
    let phnum = read_u16(hdr, 0x38)? as usize;
    let shentsize = read_u16(hdr, 0x3A)? as usize;
    let shnum = read_u16(hdr, 0x3C)? as usize;
    let mut end = (shoff + shnum * shentsize).max(phoff + phnum * phentsize).max(64);
    // SAFETY: the section header table lies inside the image (its end was just computed).
    let sh = unsafe { std::slice::from_raw_parts(image.add(shoff), shnum * shentsize) };
    for i in 0..shnum {
        let h = &sh[i * shentsize..(i + 1) * shentsize];
        let kind = u32::from_le_bytes(h[4..8].try_into().ok()?);
        const SHT_NOBITS: u32 = 8;
        if kind != SHT_NOBITS {
            end = end.max(read_u64(h, 24)? as usize + read_u64(h, 32)? as usize);
        }
    }
    Some(end)
}

/// `st_other` bit that marks a kernel entry (as opposed to a device function that NVRTC kept
/// out of line, such as the `$__internal_..._slowpath` division helpers).
const STO_CUDA_ENTRY: u8 = 0x10;

/// The entry points of a CUBIN: its global function symbols marked as entries.
pub fn cubin_entries(elf: &[u8]) -> Result<Vec<Entry>, String> {
    let file = object::File::parse(elf).map_err(|e| format!("not a readable CUBIN: {e}"))?;
    let mut entries = Vec::new();
    for sym in file.symbols() {
        let entry_flag =
            matches!(sym.flags(), SymbolFlags::Elf { st_other, .. } if st_other & STO_CUDA_ENTRY != 0);
        if sym.kind() == SymbolKind::Text && sym.is_global() && entry_flag {
            let name = sym.name().map_err(|e| format!("symbol name: {e}"))?.to_string();
            let static_shared =
                file.section_by_name(&format!(".nv.shared.{name}")).map(|s| s.size() as usize).unwrap_or(0);
            entries.push(Entry { name, static_shared });
        }
    }
    if entries.is_empty() {
        return Err("the CUBIN has no global functions".into());
    }
    Ok(entries)
}

/// The entry points of PTX text (`.entry NAME(`); static shared memory is not read from PTX.
pub fn ptx_entries(ptx: &str) -> Vec<Entry> {
    ptx.lines()
        .filter_map(|l| {
            let rest = l.split(".entry").nth(1)?;
            let name = rest.trim().split(|c: char| c == '(' || c.is_whitespace()).next()?;
            (!name.is_empty()).then(|| Entry { name: name.to_string(), static_shared: 0 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_entries_are_found() {
        let ptx = ".version 9.0\n.visible .entry relu_inplace_f16(\n.param .u32 n\n)\n{}\n.visible .entry fill_f32(\n";
        let names: Vec<_> = ptx_entries(ptx).into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["relu_inplace_f16", "fill_f32"]);
    }
}

/// The CUDA release of the tools that produced an image: both NVRTC's PTX (a comment) and its
/// CUBIN (the `.note.nv.tkinfo` note) carry "Cuda compilation tools, release 13.0, ...".
/// `None` when the text is absent (hand-written PTX), which the driver then accepts.
pub fn toolkit_release(image: &[u8]) -> Option<(i32, i32)> {
    const TAG: &[u8] = b"Cuda compilation tools, release ";
    let at = image.windows(TAG.len()).position(|w| w == TAG)? + TAG.len();
    let rest = &image[at..image.len().min(at + 16)];
    let end = rest.iter().position(|&b| b == b',' || b == 0).unwrap_or(rest.len());
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod release_tests {
    use super::toolkit_release;

    #[test]
    fn the_release_is_read_from_ptx_and_cubin_text() {
        let ptx = b"//\n// Cuda compilation tools, release 13.0, V13.0.88\n.version 9.0\n";
        assert_eq!(toolkit_release(ptx), Some((13, 0)));
        let note = b"\x00ptxas\x00Cuda compilation tools, release 12.4, V12.4.131\x00";
        assert_eq!(toolkit_release(note), Some((12, 4)));
        assert_eq!(toolkit_release(b".version 8.0\n.target sm_86\n"), None);
    }
}
