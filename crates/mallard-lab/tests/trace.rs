//! The trace format: what is written is read back, and a truncated, foreign or corrupted file
//! is an error naming the file and the offset, never a panic.

use mallard_lab::trace::{self, Event, Op, Trace, HEADER_LEN};
use proptest::prelude::*;

fn event() -> impl Strategy<Value = (u32, Op, Vec<u64>)> {
    let addr = prop_oneof![0x5555_0000_0000u64..0x5555_0100_0000, 0x7f00_0000_0000u64..0x7fff_ffff_f000, any::<u64>()];
    let op = prop_oneof![
        (addr.clone(), 0u64..1 << 40, 0u32..20).prop_map(|(addr, size, l)| Op::Alloc { addr, size, align: 1 << l }),
        addr.clone().prop_map(|addr| Op::Free { addr }),
        (addr.clone(), prop_oneof![Just(0u64), addr], any::<u64>()).prop_map(|(old, addr, size)| Op::Realloc {
            old,
            addr,
            size
        }),
    ];
    (0u32..3, op, prop::collection::vec(any::<u64>(), 0..6))
}

/// Events with strictly increasing times, so the merged order is unique.
fn trace_of(raw: Vec<(u32, Op, Vec<u64>)>, gaps: Vec<u64>) -> Trace {
    let mut time = 0;
    let events = raw
        .into_iter()
        .zip(gaps.into_iter().cycle())
        .map(|((thread, op, stack), gap)| {
            time += gap + 1;
            Event { time, thread, op, stack }
        })
        .collect();
    Trace {
        pid: 4242,
        events,
        maps: "55d0c0de0000-55d0c0df0000 r-xp 00001000 08:01 123 /usr/bin/prog\n".into(),
        start_ns: 123_456_789,
        rss: vec![(5, 4096), (900, 1 << 20)],
    }
}

proptest! {
    #[test]
    fn a_trace_reads_back_as_written(raw in prop::collection::vec(event(), 0..200), gaps in prop::collection::vec(0u64..1 << 34, 1..8)) {
        let t = trace_of(raw, gaps);
        let bytes = trace::encode(&t);
        prop_assert_eq!(trace::decode(&bytes).map_err(|e| e.1), Ok(t));
    }

    #[test]
    fn images_after_an_exec_read_back_and_summarize(a in prop::collection::vec(event(), 0..100), b in prop::collection::vec(event(), 0..100)) {
        // (Resident-set samples count as events in a summary: none here.)
        let (first, mut second) = (Trace { rss: Vec::new(), ..trace_of(a, vec![7]) }, trace_of(b, vec![3]));
        second.pid = 77;
        second.maps.clear();
        second.rss.clear();
        second.start_ns = 0;
        // The second image: a marker with its pid, then its chunks (no header, no maps).
        let mut bytes = trace::encode(&first);
        bytes.extend_from_slice(&[0xC3, 77]);
        bytes.extend_from_slice(&trace::encode(&second)[HEADER_LEN..]);
        prop_assert_eq!(trace::decode_images(&bytes).map_err(|e| e.1), Ok(vec![first.clone(), second.clone()]));
        let path = std::env::temp_dir().join(format!("mallard-lab-images-{}.trace", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let s = trace::summarize(&path).unwrap();
        let threads = |t: &Trace| { let mut v: Vec<u32> = t.events.iter().map(|e| e.thread).collect(); v.sort_unstable(); v.dedup(); v.len() as u32 };
        prop_assert_eq!(s.len(), 2);
        prop_assert_eq!((s[0].pid, s[0].events, s[0].threads, s[0].has_maps), (4242, first.events.len() as u64, threads(&first), true));
        prop_assert_eq!((s[1].pid, s[1].events, s[1].threads, s[1].has_maps), (77, second.events.len() as u64, threads(&second), false));
    }

    #[test]
    fn a_corrupted_trace_never_panics(raw in prop::collection::vec(event(), 1..50), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut bytes = trace::encode(&trace_of(raw, vec![1000]));
        for (i, v) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= v | 1;
        }
        let _ = trace::decode(&bytes); // Ok or Err, not a panic
    }
}

#[test]
fn every_truncation_inside_a_chunk_is_an_error_with_its_offset() {
    let raw: Vec<(u32, Op, Vec<u64>)> = (0..20)
        .map(|i| {
            (0, Op::Alloc { addr: 0x5555_0000_1000 + 64 * i, size: 48, align: 16 }, vec![0x5555_1234, 0x5555_5678])
        })
        .collect();
    // (No clock or resident-set chunks: every cut below is then inside a chunk.)
    let t = Trace { start_ns: 0, rss: Vec::new(), ..trace_of(raw, vec![10]) };
    let bytes = trace::encode(&t);
    // Whole chunks: the header alone, and the events without the maps chunk after them.
    let events_end = bytes.len() - (2 + t.maps.len());
    assert!(trace::decode(&bytes[..HEADER_LEN]).unwrap().events.is_empty(), "a header alone is an empty trace");
    assert!(trace::decode(&bytes[..events_end]).unwrap().maps.is_empty());
    for cut in (0..bytes.len()).filter(|&c| c != HEADER_LEN && c != events_end) {
        let (offset, what) = trace::decode(&bytes[..cut]).expect_err("a truncated trace");
        assert!(offset <= cut, "cut at {cut}: offset {offset}");
        assert!(what.contains("ends inside"), "cut at {cut}: {what}");
    }
}

#[test]
fn a_foreign_file_is_named_in_the_error() {
    let dir = std::env::temp_dir().join(format!("mallard-lab-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("not-a-trace.txt");
    std::fs::write(&path, "hello, this is a text file and not a trace\n").unwrap();
    let err = trace::read(&path).unwrap_err().to_string();
    assert!(
        err.contains("not-a-trace.txt") && err.contains("at byte 0") && err.contains("not a mallard trace"),
        "{err}"
    );
    let missing = trace::read(&dir.join("missing.trace")).unwrap_err().to_string();
    assert!(missing.contains("missing.trace") && missing.contains("cannot read it"), "{missing}");
    let mut newer = trace::encode_header(1);
    newer[8] = 2;
    std::fs::write(&path, &newer).unwrap();
    let err = trace::read(&path).unwrap_err().to_string();
    assert!(err.contains("at byte 8") && err.contains("version 2"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
