//! Naming call sites. A return address is found in the recorded process's memory map (the
//! trace's maps chunk), then in the file mapped there:
//! - DWARF line tables give `function (file:line)`, inlined calls included, from the file
//!   itself or from its separate debug file (found by build-id under `/usr/lib/debug/.build-id`,
//!   or by `.gnu_debuglink` beside it, in its `.debug/`, or under `/usr/lib/debug`), through the
//!   `addr2line` crate;
//! - otherwise the ELF symbol table (`.symtab`, or `.dynsym` when the file is stripped) gives
//!   `function (module)`;
//! - otherwise the frame reads `module+0xADDR`, ADDR being the address in the file as linked,
//!   so that `addr2line -e module 0xADDR` finds it.
//!
//! Rust and C++ names are demangled. A value that is not a return address (the frame-pointer
//! walk of code built without frame pointers reads whatever the register held) is recognised:
//! it is not in executable code, or the bytes before it are not a call instruction. The frames
//! from the first such value on are dropped ([`Symbolizer::clean`]), so that one call site is
//! one row.

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One line of `/proc/PID/maps` that maps a file.
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    executable: bool,
    path: String,
}

/// A file's functions: (address, size, name), by address.
type Functions = Vec<(u64, u64, String)>;

/// One mapped file, as far as it could be read.
struct Module {
    /// Its functions from the symbol tables.
    functions: Functions,
    /// How file offsets map to addresses: (file offset, size, address) per segment.
    segments: Vec<(u64, u64, u64)>,
    /// The file's bytes (to check for a call instruction before a return address).
    data: Vec<u8>,
    /// Whether it is x86-64 code (the one whose call instructions are checked): a trace
    /// recorded on aarch64 may be read here.
    x86_64: bool,
    /// Its DWARF, or its debug file's.
    dwarf: Option<addr2line::Loader>,
}

/// One named frame: the function (if known), its source location (if the DWARF says), and
/// where it is: the module's file name and the address in the file as linked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: String,
    pub address: u64,
}

impl Frame {
    /// `function (file:line)`, `function (module)` or `module+0xADDR`.
    pub fn label(&self) -> String {
        match (&self.function, &self.file, self.line) {
            (Some(f), Some(file), Some(line)) => {
                format!("{f} ({}:{line})", file.rsplit('/').next().unwrap_or(file))
            }
            (Some(f), _, _) => format!("{f} ({})", self.module),
            (None, _, _) if self.module.is_empty() => format!("{:#x}", self.address),
            (None, _, _) => format!("{}+{:#x}", self.module, self.address),
        }
    }
}

pub struct Symbolizer {
    maps: Vec<Mapping>,
    /// When the trace was written: a mapped file changed after it no longer has the code the
    /// addresses point into.
    recorded: Option<std::time::SystemTime>,
    /// The mapped files that changed after the recording (their frames: `module+0xADDR`).
    pub stale: Vec<String>,
    /// Per file path; `None` if it cannot be read.
    modules: HashMap<String, Option<Module>>,
    /// Per return address: its frames, innermost (inlined) first; empty if it is not a return
    /// address.
    cache: HashMap<u64, Vec<Frame>>,
    /// C++ names the `cpp_demangle` crate leaves mangled (some templates with `enable_if`),
    /// demangled by binutils' `c++filt` where it is installed.
    cxxfilt: HashMap<String, String>,
}

impl Symbolizer {
    /// A symbolizer over the text of a maps file.
    pub fn new(maps: &str) -> Symbolizer {
        let maps = maps
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (range, perms, offset) = (f.next()?, f.next()?, f.next()?);
                let path = f.nth(2)?;
                if !path.starts_with('/') {
                    return None;
                }
                let (a, b) = range.split_once('-')?;
                Some(Mapping {
                    start: u64::from_str_radix(a, 16).ok()?,
                    end: u64::from_str_radix(b, 16).ok()?,
                    offset: u64::from_str_radix(offset, 16).ok()?,
                    executable: perms.contains('x'),
                    path: path.to_owned(),
                })
            })
            .collect();
        Symbolizer {
            maps,
            recorded: None,
            stale: Vec::new(),
            modules: HashMap::new(),
            cache: HashMap::new(),
            cxxfilt: HashMap::new(),
        }
    }

    /// Names no frame from a file modified after `time` (when the trace was written): it was
    /// rebuilt or replaced, and its symbols would be wrong.
    pub fn recorded_at(mut self, time: Option<std::time::SystemTime>) -> Symbolizer {
        self.recorded = time;
        self
    }

    /// Whether the trace had a memory map to name addresses with.
    pub fn has_maps(&self) -> bool {
        !self.maps.is_empty()
    }

    /// The frames of return address `ret` (the call is just before it), innermost first: more
    /// than one where calls were inlined. Empty if `ret` is not a return address.
    pub fn frames(&mut self, ret: u64) -> &[Frame] {
        if !self.cache.contains_key(&ret) {
            let mut f = self.lookup(ret);
            for frame in &mut f {
                if let Some(name) = frame.function.as_mut().filter(|n| n.starts_with("_Z")) {
                    *name = self.cxxfilt(name);
                }
            }
            self.cache.insert(ret, f);
        }
        &self.cache[&ret]
    }

    /// `stack` up to its first value that is not a return address (the walk went astray
    /// there): the call site as it is keyed and shown. Without a memory map, all of it.
    pub fn clean(&mut self, stack: &[u64]) -> Vec<u64> {
        if self.maps.is_empty() {
            return stack.to_vec();
        }
        stack.iter().copied().take_while(|&r| !self.frames(r).is_empty()).collect()
    }

    /// The labels of one return address's frames, innermost first (code inlined into the
    /// caller shows as callers of their own); the bare address if it names none.
    pub fn labels(&mut self, ret: u64) -> Vec<String> {
        let frames = self.frames(ret);
        if frames.is_empty() {
            return vec![format!("{ret:#x}")];
        }
        frames.iter().map(Frame::label).collect()
    }

    /// `name` demangled by `c++filt`, once per name; as it is if `c++filt` cannot.
    fn cxxfilt(&mut self, name: &str) -> String {
        if let Some(d) = self.cxxfilt.get(name) {
            return d.clone();
        }
        let d = std::process::Command::new("c++filt")
            .arg(name)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim_end().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| name.to_owned());
        self.cxxfilt.insert(name.to_owned(), d.clone());
        d
    }

    fn lookup(&mut self, ret: u64) -> Vec<Frame> {
        let pc = ret.wrapping_sub(1);
        if self.maps.is_empty() {
            return vec![Frame { function: None, file: None, line: None, module: String::new(), address: ret }];
        }
        let Some(m) = self.maps.iter().find(|m| pc >= m.start && pc < m.end) else { return Vec::new() };
        if !m.executable {
            return Vec::new();
        }
        let file_off = pc - m.start + m.offset;
        let module = m.path.rsplit('/').next().unwrap_or(&m.path).to_owned();
        let path = m.path.clone();
        let changed = |p: &str| {
            let modified = std::fs::metadata(p).and_then(|m| m.modified()).ok();
            matches!((modified, self.recorded), (Some(m), Some(r)) if m > r)
        };
        if !self.modules.contains_key(&path) && changed(&path) {
            self.stale.push(path.clone());
            self.modules.insert(path.clone(), None);
        }
        if self.stale.contains(&path) {
            // Not the code that ran: an address, not a wrong name (and no check that it
            // follows a call, which would cut the stack there).
            return vec![Frame { function: None, file: None, line: None, module, address: file_off + 1 }];
        }
        let entry = self.modules.entry(path.clone()).or_insert_with(|| load(Path::new(&path)));
        let unknown = |address| vec![Frame { function: None, file: None, line: None, module: module.clone(), address }];
        let Some(md) = entry else { return unknown(file_off + 1) };
        let Some(&(seg_off, _, seg_addr)) = md.segments.iter().find(|&&(o, z, _)| file_off >= o && file_off < o + z)
        else {
            return unknown(file_off + 1);
        };
        if !after_call(&md.data, file_off + 1, md.x86_64) {
            return Vec::new();
        }
        let addr = file_off - seg_off + seg_addr;
        let mut frames = Vec::new();
        if let Some(dwarf) = &md.dwarf {
            if let Ok(mut it) = dwarf.find_frames(addr) {
                while let Ok(Some(f)) = it.next() {
                    let function = f.function.as_ref().and_then(|n| n.demangle().ok()).map(|n| n.into_owned());
                    let (file, line) = f.location.map_or((None, None), |l| (l.file.map(str::to_owned), l.line));
                    frames.push(Frame { function, file, line, module: module.clone(), address: addr + 1 });
                }
            }
        }
        if frames.iter().all(|f| f.function.is_none()) {
            let i = md.functions.partition_point(|&(a, _, _)| a <= addr);
            let function = match i.checked_sub(1).map(|k| &md.functions[k]) {
                Some((a, z, name)) if addr < a + (*z).max(1) => Some(name.clone()),
                _ => None,
            };
            let (file, line) = frames.first().map_or((None, None), |f| (f.file.clone(), f.line));
            frames = vec![Frame { function, file, line, module: module.clone(), address: addr + 1 }];
        }
        frames
    }
}

/// Whether the bytes before `ret` (a file offset) end with an x86-64 call instruction: `E8`
/// and a 32-bit displacement, or `FF /2` (an indirect call, 2 to 7 bytes). In other code
/// (`x86_64` false), or where the bytes are not known, every address passes.
fn after_call(data: &[u8], ret: u64, x86_64: bool) -> bool {
    if !x86_64 {
        return true;
    }
    let Some(r) = usize::try_from(ret).ok().filter(|&r| r >= 7 && r <= data.len()) else { return true };
    if data[r - 5] == 0xE8 {
        return true;
    }
    (2..=7).any(|k| data[r - k] == 0xFF && (data[r - k + 1] >> 3) & 7 == 2)
}

/// A mapped file's symbols, segments, bytes and DWARF.
fn load(path: &Path) -> Option<Module> {
    // Only regular files: a map may name a device (/dev/zero) or a FIFO, which would be read
    // forever or block.
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let debug = debug_file(path, &file);
    let mut functions: Functions = symbols(&file);
    if let Some(dbg) = debug.as_ref().filter(|d| d.is_file()).and_then(|d| std::fs::read(d).ok()) {
        // A stripped file's full symbol table is in its debug file.
        if let Ok(f) = object::File::parse(&*dbg) {
            functions.extend(symbols(&f));
        }
    }
    functions.sort_by_key(|f| (f.0, std::cmp::Reverse(f.1)));
    functions.dedup_by_key(|f| f.0);
    let segments = file.segments().map(|s| (s.file_range().0, s.file_range().1, s.address())).collect();
    let dwarf = if file.has_debug_symbols() { addr2line::Loader::new(path).ok() } else { None }
        .or_else(|| debug.and_then(|d| addr2line::Loader::new(d).ok()));
    let x86_64 = file.architecture() == object::Architecture::X86_64;
    Some(Module { functions, segments, data, dwarf, x86_64 })
}

fn symbols(file: &object::File) -> Functions {
    file.symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
        .filter_map(|s| {
            let raw = s.name().ok()?;
            Some((s.address(), s.size(), addr2line::demangle_auto(raw.into(), None).into_owned()))
        })
        .collect()
}

/// The separate debug file of `path`: by build-id, then by `.gnu_debuglink` (GDB's search
/// order, without GDB's directories other than `/usr/lib/debug`).
fn debug_file(path: &Path, file: &object::File) -> Option<PathBuf> {
    if let Ok(Some(id)) = file.build_id() {
        if id.len() > 1 {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            let p = PathBuf::from(format!("/usr/lib/debug/.build-id/{}/{}.debug", &hex[..2], &hex[2..]));
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let (name, _crc) = file.gnu_debuglink().ok()??;
    let name = Path::new(std::str::from_utf8(name).ok()?);
    let dir = path.parent()?;
    let rel = dir.strip_prefix("/").unwrap_or(dir);
    [dir.join(name), dir.join(".debug").join(name), Path::new("/usr/lib/debug").join(rel).join(name)]
        .into_iter()
        .find(|p| p.is_file() && p != path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_return_address_follows_a_call_instruction() {
        // call rel32; call *%rax; call *%r11 (REX); call *0x10(%rip); then code that is no call.
        let direct = [0x90, 0x90, 0xE8, 1, 2, 3, 4];
        assert!(after_call(&direct, 7, true));
        assert!(after_call(&[0x90, 0x90, 0x90, 0x90, 0x90, 0xFF, 0xD0], 7, true));
        assert!(after_call(&[0x90, 0x90, 0x90, 0x90, 0x41, 0xFF, 0xD3], 7, true));
        assert!(after_call(&[0x90, 0xFF, 0x15, 0x10, 0, 0, 0], 7, true));
        assert!(!after_call(&[0x48, 0x89, 0xE5, 0x48, 0x83, 0xEC, 0x10], 7, true), "mov %rsp,%rbp; sub $16,%rsp");
        assert!(!after_call(&[0x90, 0x90, 0x90, 0x90, 0x90, 0xFF, 0xE0], 7, true), "jmp *%rax is no call");
        // In aarch64 code (a trace recorded there) the x86-64 check does not apply.
        assert!(after_call(&[0x48, 0x89, 0xE5, 0x48, 0x83, 0xEC, 0x10], 7, false));
    }

    #[test]
    fn a_stack_is_cut_at_its_first_value_that_is_no_return_address() {
        // This test's own executable: a return address into it, and values that are not.
        let exe = std::env::current_exe().unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mut s = Symbolizer::new(&maps);
        assert!(s.has_maps());
        let here = a_stack_is_cut_at_its_first_value_that_is_no_return_address as *const () as u64;
        let heap = Box::into_raw(Box::new(7u64)) as u64;
        // `here` is a function's first byte: no call ends there (it follows a `ret` or padding).
        let cut = s.clean(&[heap, here]);
        assert!(cut.is_empty(), "a heap address is not code: {cut:?}");
        let name = exe.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(s.maps.iter().any(|m| m.path.ends_with(&name) && m.executable));
        assert_eq!(s.clean(&[0x10, here]), Vec::<u64>::new(), "an unmapped address");
    }
}
