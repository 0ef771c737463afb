//! Naming call sites: a return address is found in the recorded process's memory map (the
//! trace's maps chunk), then in the ELF symbol table of the file mapped there (`.symtab`, or
//! `.dynsym` when the file is stripped). Rust names are demangled.

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};
use std::collections::HashMap;

/// One line of `/proc/PID/maps` that maps a file.
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: String,
}

/// A file's functions: (address, size, name), by address.
type Functions = Vec<(u64, u64, String)>;
/// A file's segments: (file offset, size, address).
type Segments = Vec<(u64, u64, u64)>;

pub struct Symbolizer {
    maps: Vec<Mapping>,
    /// Per file: its functions, and how file offsets map to addresses ((offset, size,
    /// address) per segment); `None` if it cannot be read.
    files: HashMap<String, Option<(Functions, Segments)>>,
    names: HashMap<u64, String>,
}

impl Symbolizer {
    /// A symbolizer over the text of a maps file.
    pub fn new(maps: &str) -> Symbolizer {
        let maps = maps
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (range, _perms, offset) = (f.next()?, f.next()?, f.next()?);
                let path = f.nth(2)?;
                if !path.starts_with('/') {
                    return None;
                }
                let (a, b) = range.split_once('-')?;
                Some(Mapping {
                    start: u64::from_str_radix(a, 16).ok()?,
                    end: u64::from_str_radix(b, 16).ok()?,
                    offset: u64::from_str_radix(offset, 16).ok()?,
                    path: path.to_owned(),
                })
            })
            .collect();
        Symbolizer { maps, files: HashMap::new(), names: HashMap::new() }
    }

    /// `function (file)` for return address `ret` (the call is just before it), or
    /// `0x… (file)` / `0x…` as far as it can be named.
    pub fn name(&mut self, ret: u64) -> String {
        if let Some(n) = self.names.get(&ret) {
            return n.clone();
        }
        let n = self.lookup(ret);
        self.names.insert(ret, n.clone());
        n
    }

    fn lookup(&mut self, ret: u64) -> String {
        let pc = ret.saturating_sub(1);
        let Some(m) = self.maps.iter().find(|m| pc >= m.start && pc < m.end) else { return format!("{ret:#x}") };
        let file_off = pc - m.start + m.offset;
        let short = m.path.rsplit('/').next().unwrap_or(&m.path).to_owned();
        let path = m.path.clone();
        let entry = self.files.entry(path.clone()).or_insert_with(|| load(&path));
        let Some((functions, segments)) = entry else { return format!("{ret:#x} ({short})") };
        let Some(&(seg_off, _, seg_addr)) = segments.iter().find(|&&(o, z, _)| file_off >= o && file_off < o + z)
        else {
            return format!("{ret:#x} ({short})");
        };
        let addr = file_off - seg_off + seg_addr;
        let i = functions.partition_point(|&(a, _, _)| a <= addr);
        match i.checked_sub(1).map(|k| &functions[k]) {
            Some((a, z, name)) if addr < a + (*z).max(1) => format!("{name} ({short})"),
            _ => format!("{ret:#x} ({short})"),
        }
    }
}

/// The functions and segments of the ELF file at `path`.
fn load(path: &str) -> Option<(Functions, Segments)> {
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let mut functions: Functions = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
        .filter_map(|s| Some((s.address(), s.size(), format!("{:#}", rustc_demangle::demangle(s.name().ok()?)))))
        .collect();
    functions.sort_by_key(|f| (f.0, std::cmp::Reverse(f.1)));
    functions.dedup_by_key(|f| f.0);
    let segments = file.segments().map(|s| (s.file_range().0, s.file_range().1, s.address())).collect();
    Some((functions, segments))
}
