//! Rust programs: ordinary Rust code (serde_json, collections, strings) on whatever global
//! allocator the binary has. They measure what a Rust program sees, not one allocator call:
//! `mallard-workload` runs them on libc's `malloc` (so on the preloaded allocator), and its
//! `-mimalloc`, `-jemalloc` and `-mallard` siblings on those crates as `#[global_allocator]`.

use crate::workloads::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    items: Vec<Item>,
    tags: Vec<String>,
    note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    sku: String,
    quantity: u32,
    price_cents: u64,
}

fn word(rng: &mut Rng, min: usize, max: usize) -> String {
    let len = min + rng.below(max - min + 1);
    (0..len).map(|_| (b'a' + rng.below(26) as u8) as char).collect()
}

fn orders(rng: &mut Rng, n: usize) -> Vec<Order> {
    (0..n as u64)
        .map(|id| Order {
            id,
            customer: word(rng, 4, 24),
            items: (0..1 + rng.below(8))
                .map(|_| Item {
                    sku: format!("SKU-{:06}", rng.below(1_000_000)),
                    quantity: 1 + rng.below(20) as u32,
                    price_cents: rng.below(100_000) as u64,
                })
                .collect(),
            tags: (0..rng.below(5)).map(|_| word(rng, 3, 10)).collect(),
            note: (rng.below(4) == 0).then(|| word(rng, 20, 200)),
        })
        .collect()
}

/// serde_json: serialize a document of `n` orders, parse it into a `Value` tree, convert that
/// back into typed structs (checked equal), and print it pretty; `rounds` times.
pub fn json(rounds: usize, n: usize) {
    let doc = orders(&mut Rng::new(9), n);
    for _ in 0..rounds {
        let text = serde_json::to_string(&doc).expect("serialize");
        let value: serde_json::Value = serde_json::from_str(&text).expect("parse");
        let pretty = serde_json::to_string_pretty(&value).expect("pretty");
        let back: Vec<Order> = serde_json::from_value(value).expect("typed");
        assert!(back == doc, "round trip changed the document");
        assert!(pretty.len() > text.len());
        black_box((text, pretty));
    }
}

/// Collections and strings: an inverted index (`BTreeMap<String, Vec<u32>>`) of generated
/// words, a `HashMap<u64, String>` cache with evictions, sorting, joining and splitting;
/// `rounds` times over `n` words.
pub fn collections(rounds: usize, n: usize) {
    let mut rng = Rng::new(13);
    for _ in 0..rounds {
        let mut index: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut cache: HashMap<u64, String> = HashMap::new();
        for i in 0..n as u32 {
            let w = word(&mut rng, 2, 7);
            cache.insert(rng.next_u64() % (n as u64 / 2 + 1), format!("{w}:{i}"));
            index.entry(w).or_default().push(i);
        }
        let before = index.len();
        index.retain(|k, v| !(k.len() % 2 == 0 && v.len() < 3));
        cache.retain(|k, _| k % 3 != 0);
        let mut keys: Vec<String> = index.keys().cloned().collect();
        keys.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| b.cmp(a)));
        let joined = keys.join(" ");
        assert_eq!(joined.split(' ').count(), keys.len());
        let postings: usize = index.values().map(Vec::len).sum();
        assert!(index.len() <= before && postings <= n);
        black_box((joined, cache));
    }
}
