//! Traces: a program's allocations as `mallard record` writes them and `mallard replay` reads
//! them. The format is documented in `docs/trace-format.md`; in short, a fixed header, then
//! chunks, each the events of one thread in time order, each event a kind byte and LEB128
//! varints (addresses as zigzag differences from the chunk's previous address).
//!
//! Reading checks everything: a truncated, foreign or corrupted file gives a [`TraceError`]
//! that names the file and the byte offset, never a panic.

use std::fmt;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"MLLRDTRC";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 24;
const CHUNK_TAG: u8 = 0xC1;
const MAPS_TAG: u8 = 0xC2;
const IMAGE_TAG: u8 = 0xC3;
const CLOCK_TAG: u8 = 0xC4;
/// The most return addresses an event keeps.
pub const MAX_FRAMES: usize = 32;

/// What one event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A block of `size` bytes aligned to `align` was handed out at `addr`.
    Alloc { addr: u64, size: u64, align: u64 },
    /// The block at `addr` was freed.
    Free { addr: u64 },
    /// The block at `old` was resized to `size` bytes, now at `addr` (0: the call failed and
    /// `old` is unchanged).
    Realloc { old: u64, addr: u64, size: u64 },
}

/// One allocator call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Nanoseconds since the trace began.
    pub time: u64,
    /// The recording thread's number (0 for the first thread seen).
    pub thread: u32,
    pub op: Op,
    /// Return addresses of the call site, innermost first (symbolized when reporting).
    pub stack: Vec<u64>,
}

/// A whole trace, its events merged from all threads' chunks in time order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    pub pid: u32,
    pub events: Vec<Event>,
    /// The recorded process's memory map at exit (the text of `/proc/PID/maps`), for
    /// symbolizing call sites; empty if the trace has none.
    pub maps: String,
    /// When recording began, on the machine's monotonic clock (ns; 0: not known): event times
    /// count from here, and traces of one run line up by it.
    pub start_ns: u64,
    /// The process's resident set over time: (ns since the trace began, bytes), in time order.
    pub rss: Vec<(u64, u64)>,
}

/// A trace file that cannot be read: which file, where, and what is wrong.
#[derive(Debug)]
pub struct TraceError {
    pub file: PathBuf,
    pub offset: u64,
    pub what: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: at byte {}: {}", self.file.display(), self.offset, self.what)
    }
}

impl std::error::Error for TraceError {}

/// The file header: magic, version, flags (0), the recorded process's id, 4 reserved bytes.
pub fn encode_header(pid: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&pid.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(d: i64) -> u64 {
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// One chunk: the events of `thread`, in time order (all of them that thread's).
pub fn encode_chunk(thread: u32, events: &[Event]) -> Vec<u8> {
    let mut body = Vec::new();
    let (mut prev_time, mut prev_addr) = (events.first().map_or(0, |e| e.time), 0u64);
    let mut addr = |body: &mut Vec<u8>, a: u64| {
        put_varint(body, zigzag(a.wrapping_sub(prev_addr) as i64));
        prev_addr = a;
    };
    for e in events {
        debug_assert!(e.thread == thread && e.time >= prev_time && e.stack.len() <= MAX_FRAMES);
        let kind = match e.op {
            Op::Alloc { .. } => 1,
            Op::Free { .. } => 2,
            Op::Realloc { .. } => 3,
        };
        body.push(kind);
        put_varint(&mut body, e.time - prev_time);
        prev_time = e.time;
        match e.op {
            Op::Alloc { addr: a, size, align } => {
                addr(&mut body, a);
                put_varint(&mut body, size);
                body.push(align.max(1).trailing_zeros() as u8);
            }
            Op::Free { addr: a } => addr(&mut body, a),
            Op::Realloc { old, addr: a, size } => {
                addr(&mut body, old);
                put_varint(&mut body, a);
                put_varint(&mut body, size);
            }
        }
        body.push(e.stack.len() as u8);
        for &f in &e.stack {
            put_varint(&mut body, f);
        }
    }
    let mut out = vec![CHUNK_TAG];
    put_varint(&mut out, thread as u64);
    put_varint(&mut out, events.first().map_or(0, |e| e.time));
    put_varint(&mut out, events.len() as u64);
    put_varint(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    out
}

/// A whole trace file's bytes, one chunk per thread (events in time order per thread).
pub fn encode(trace: &Trace) -> Vec<u8> {
    let mut out = encode_header(trace.pid);
    if trace.start_ns != 0 {
        out.push(CLOCK_TAG);
        put_varint(&mut out, trace.start_ns);
    }
    if !trace.rss.is_empty() {
        // The samples as a chunk of their own (of a thread number no event uses).
        let mut body = Vec::new();
        let mut prev = trace.rss[0].0;
        for &(t, bytes) in &trace.rss {
            body.push(4);
            put_varint(&mut body, t - prev);
            put_varint(&mut body, bytes);
            prev = t;
        }
        out.push(CHUNK_TAG);
        put_varint(&mut out, u32::MAX as u64);
        put_varint(&mut out, trace.rss[0].0);
        put_varint(&mut out, trace.rss.len() as u64);
        put_varint(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
    }
    let mut threads: Vec<u32> = trace.events.iter().map(|e| e.thread).collect();
    threads.sort_unstable();
    threads.dedup();
    for t in threads {
        let events: Vec<Event> = trace.events.iter().filter(|e| e.thread == t).cloned().collect();
        out.extend_from_slice(&encode_chunk(t, &events));
    }
    if !trace.maps.is_empty() {
        out.push(MAPS_TAG);
        put_varint(&mut out, trace.maps.len() as u64);
        out.extend_from_slice(trace.maps.as_bytes());
    }
    out
}

/// Reads the trace file at `path`: the last program its process ran (see [`read_images`]).
pub fn read(path: &Path) -> Result<Trace, TraceError> {
    let mut images = read_images(path)?;
    Ok(images.pop().expect("a trace has at least one image"))
}

/// Reads the trace file at `path`, one [`Trace`] per program image of the process, in order:
/// a process that `exec`s (a shim, a shell's last command) goes on in the same file with a new
/// heap.
pub fn read_images(path: &Path) -> Result<Vec<Trace>, TraceError> {
    regular(path)?;
    let bytes = std::fs::read(path).map_err(|e| TraceError {
        file: path.to_owned(),
        offset: 0,
        what: format!("cannot read it: {e}"),
    })?;
    decode_images(&bytes).map_err(|(offset, what)| TraceError { file: path.to_owned(), offset: offset as u64, what })
}

/// What one image of a trace holds, from its chunk headers alone (see [`summarize`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub pid: u32,
    pub events: u64,
    /// Distinct thread numbers.
    pub threads: u32,
    pub has_maps: bool,
}

/// Counts the events and threads of each image of the trace at `path` without decoding the
/// events (it reads chunk headers and skips their bodies): what `mallard record` says at the
/// end of a run, at the speed of reading the file. A broken file is an error as in [`read`].
pub fn summarize(path: &Path) -> Result<Vec<Summary>, TraceError> {
    regular(path)?;
    let fail = |offset: usize, what: String| TraceError { file: path.to_owned(), offset: offset as u64, what };
    let b = std::fs::read(path).map_err(|e| fail(0, format!("cannot read it: {e}")))?;
    if b.len() < HEADER_LEN || &b[..8] != MAGIC {
        // The full reader names the problem.
        return decode_images(&b).map(|_| Vec::new()).map_err(|(o, w)| fail(o, w));
    }
    let mut images = Vec::new();
    let mut cur = Summary { pid: u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")), ..Summary::default() };
    let mut seen: Vec<u64> = Vec::new();
    let mut r = Reader { b: &b, at: HEADER_LEN };
    let skip = |r: &mut Reader, len: u64, what: &str| -> Result<(), Fail> {
        let end = (r.at as u64).checked_add(len).filter(|&e| e <= r.b.len() as u64).ok_or_else(|| {
            (r.at, format!("the file ends inside {what} of {len} bytes ({} are left)", r.b.len() - r.at))
        })?;
        r.at = end as usize;
        Ok(())
    };
    let result = (|| -> Result<(), Fail> {
        while r.at < b.len() {
            let at = r.at;
            match r.byte("a chunk header")? {
                CHUNK_TAG => {
                    let thread = r.varint("a chunk header")?;
                    r.varint("a chunk header")?;
                    cur.events += r.varint("a chunk header")?;
                    let len = r.varint("a chunk header")?;
                    skip(&mut r, len, "a chunk")?;
                    if !seen.contains(&thread) {
                        seen.push(thread);
                    }
                }
                MAPS_TAG => {
                    let len = r.varint("a maps chunk")?;
                    skip(&mut r, len, "a maps chunk")?;
                    cur.has_maps = true;
                }
                CLOCK_TAG => {
                    r.varint("a clock chunk")?;
                }
                IMAGE_TAG => {
                    let pid = r.varint("an image marker")?;
                    cur.threads = seen.len() as u32;
                    seen.clear();
                    let next = Summary { pid: pid as u32, ..Summary::default() };
                    images.push(std::mem::replace(&mut cur, next));
                }
                tag => return Err((at, format!("expected a chunk (tag 0xc1 to 0xc4), found byte {tag:#04x}"))),
            }
        }
        Ok(())
    })();
    result.map_err(|(o, w)| fail(o, w))?;
    cur.threads = seen.len() as u32;
    images.push(cur);
    Ok(images)
}

/// A trace is a regular file: a device (`/dev/zero`), a FIFO or a directory would be read
/// forever, block, or fail later with a vaguer error.
fn regular(path: &Path) -> Result<(), TraceError> {
    let fail = |what: String| TraceError { file: path.to_owned(), offset: 0, what };
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) if m.is_dir() => Err(fail("it is a directory, not a trace".into())),
        Ok(_) => Err(fail("not a regular file (a device, FIFO or socket), not a trace".into())),
        Err(e) => Err(fail(format!("cannot read it: {e}"))),
    }
}

/// A cursor over the file's bytes; errors carry the offset where they were found.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

type Fail = (usize, String);

impl Reader<'_> {
    fn byte(&mut self, what: &str) -> Result<u8, Fail> {
        let v = *self.b.get(self.at).ok_or_else(|| (self.at, format!("the file ends inside {what}")))?;
        self.at += 1;
        Ok(v)
    }

    fn varint(&mut self, what: &str) -> Result<u64, Fail> {
        let start = self.at;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            if shift == 63 && b > 1 {
                break;
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err((start, format!("{what} is not a valid number (more than 64 bits)")))
    }
}

/// Decodes a whole trace, its last image (see [`decode_images`]).
pub fn decode(b: &[u8]) -> Result<Trace, Fail> {
    let mut images = decode_images(b)?;
    Ok(images.pop().expect("a trace has at least one image"))
}

/// Decodes a whole trace, one [`Trace`] per program image (never none); on error, the byte
/// offset and what is wrong.
pub fn decode_images(b: &[u8]) -> Result<Vec<Trace>, Fail> {
    if b.len() < HEADER_LEN || &b[..8] != MAGIC {
        let what = if b.len() >= 8 && &b[..8] != MAGIC {
            "not a mallard trace (it does not start with MLLRDTRC)".to_owned()
        } else {
            format!("the file ends inside the header ({} of {HEADER_LEN} bytes)", b.len())
        };
        return Err((0, what));
    }
    let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    if word(8) != VERSION {
        return Err((8, format!("trace format version {}; this mallard reads version {VERSION}", word(8))));
    }
    let mut pid = word(16);
    let mut r = Reader { b, at: HEADER_LEN };
    let mut images = Vec::new();
    let mut chunks: Vec<Vec<Event>> = Vec::new();
    let mut cur = Trace { pid, ..Trace::default() };
    while r.at < b.len() {
        let chunk_at = r.at;
        let tag = r.byte("a chunk header")?;
        if tag == IMAGE_TAG {
            let next = r.varint("an image marker")?;
            pid = u32::try_from(next).map_err(|_| (chunk_at, format!("process id {next} too large")))?;
            let done = std::mem::replace(&mut cur, Trace { pid, ..Trace::default() });
            images.push(merge(done, std::mem::take(&mut chunks)));
            continue;
        }
        if tag == CLOCK_TAG {
            cur.start_ns = r.varint("a clock chunk")?;
            continue;
        }
        if tag == MAPS_TAG {
            let len = r.varint("a maps chunk")? as usize;
            let end = r.at.checked_add(len).filter(|&e| e <= b.len()).ok_or_else(|| {
                (r.at, format!("the file ends inside a maps chunk of {len} bytes ({} are left)", b.len() - r.at))
            })?;
            cur.maps = String::from_utf8_lossy(&b[r.at..end]).into_owned();
            r.at = end;
            continue;
        }
        if tag != CHUNK_TAG {
            return Err((chunk_at, format!("expected a chunk (tag 0xc1 to 0xc4), found byte {tag:#04x}")));
        }
        let thread = r.varint("a chunk header")?;
        let thread = u32::try_from(thread).map_err(|_| (chunk_at, format!("thread number {thread} too large")))?;
        let mut time = r.varint("a chunk header")?;
        let count = r.varint("a chunk header")?;
        let len = r.varint("a chunk header")? as usize;
        let body_at = r.at;
        let end = body_at.checked_add(len).filter(|&e| e <= b.len()).ok_or_else(|| {
            (body_at, format!("the file ends inside a chunk of {len} bytes ({} are left)", b.len() - body_at))
        })?;
        let mut body = Reader { b: &b[..end], at: body_at };
        // (At least 3 bytes an event: a corrupted count must not reserve gigabytes.)
        let mut events = Vec::with_capacity(count.min(len as u64 / 3) as usize);
        let mut prev_addr = 0u64;
        for _ in 0..count {
            let at = body.at;
            let kind = body.byte("an event")?;
            time = time
                .checked_add(body.varint("an event's time")?)
                .ok_or_else(|| (at, "an event's time overflows".to_owned()))?;
            if kind == 4 {
                cur.rss.push((time, body.varint("a resident set size")?));
                continue;
            }
            let mut addr = |body: &mut Reader, what: &str| -> Result<u64, Fail> {
                let a = prev_addr.wrapping_add(unzigzag(body.varint(what)?) as u64);
                prev_addr = a;
                Ok(a)
            };
            let op = match kind {
                1 => {
                    let addr = addr(&mut body, "an allocation's address")?;
                    let size = body.varint("an allocation's size")?;
                    let log = body.byte("an allocation's alignment")?;
                    if log > 63 {
                        return Err((body.at - 1, format!("alignment 2^{log} is not possible")));
                    }
                    Op::Alloc { addr, size, align: 1 << log }
                }
                2 => Op::Free { addr: addr(&mut body, "a free's address")? },
                3 => {
                    let old = addr(&mut body, "a realloc's old address")?;
                    let addr = body.varint("a realloc's new address")?;
                    let size = body.varint("a realloc's size")?;
                    Op::Realloc { old, addr, size }
                }
                k => return Err((at, format!("unknown event kind {k}"))),
            };
            let n = body.byte("an event's call site")? as usize;
            if n > MAX_FRAMES {
                return Err((body.at - 1, format!("{n} return addresses (at most {MAX_FRAMES})")));
            }
            let stack = (0..n).map(|_| body.varint("a return address")).collect::<Result<_, _>>()?;
            events.push(Event { time, thread, op, stack });
        }
        if body.at != end {
            return Err((body.at, format!("{} bytes left over after the chunk's {count} events", end - body.at)));
        }
        r.at = end;
        chunks.push(events);
    }
    images.push(merge(cur, chunks));
    Ok(images)
}

/// One image's trace: its threads' chunks merged by time (stable: chunk order breaks ties),
/// its resident-set samples in time order.
fn merge(mut t: Trace, chunks: Vec<Vec<Event>>) -> Trace {
    t.events = chunks.into_iter().flatten().collect();
    t.events.sort_by_key(|e| e.time);
    t.rss.sort_by_key(|s| s.0);
    t
}
