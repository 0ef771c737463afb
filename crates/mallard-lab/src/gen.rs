//! Synthetic traces in the classic shapes of program heaps (Wilson et al., 1995: ramps, peaks
//! and plateaus), for teaching, tests and trying the strategies without recording a program.
//! Sizes are skewed to the small end as real heaps are, with a rare large block; the same
//! shape, length and seed give the same trace.

use crate::trace::{Event, Op, Trace};

/// The shape of the live heap over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The live heap grows steadily: most blocks live to the end, a few die young.
    Ramp,
    /// Repeated phases that build a large structure and free most of it.
    Peaks,
    /// A build-up to a working set, then steady churn around it.
    Plateau,
    /// Allocations and frees in random order, sizes random.
    Random,
}

impl Shape {
    pub const ALL: [Shape; 4] = [Shape::Ramp, Shape::Peaks, Shape::Plateau, Shape::Random];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Ramp => "ramp",
            Shape::Peaks => "peaks",
            Shape::Plateau => "plateau",
            Shape::Random => "random",
        }
    }

    pub fn from_name(s: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// xorshift64*: small and deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// 16 B – 4 KiB, skewed small (each power-of-two band equally likely), and one in 200 a
    /// block of 16–256 KiB.
    fn size(&mut self) -> u64 {
        if self.below(200) == 0 {
            return 16 * 1024 + self.below(240 * 1024);
        }
        let band = 4 + self.below(8); // 2^4 .. 2^11
        (1 << band) + self.below(1 << band)
    }
}

/// A trace of `events` events (allocations and frees, about half each) in `shape`, from
/// `seed`. Every block is freed by the end unless the shape keeps it (a ramp's survivors).
pub fn generate(shape: Shape, events: usize, seed: u64) -> Trace {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut out = Vec::with_capacity(events);
    let mut live: Vec<u64> = Vec::new();
    // Fake but plausible addresses: each block its own, never reused (the replay maps them).
    let mut next_addr = 0x5555_0000_0000u64;
    let mut time = 0u64;
    let mut push = |out: &mut Vec<Event>, op: Op| {
        time += 50;
        out.push(Event { time, thread: 0, op, stack: Vec::new() });
    };
    for i in 0..events {
        let frac = i as f64 / events.max(1) as f64;
        // The probability that this event frees a block, by shape.
        let p_free = match shape {
            Shape::Ramp => 0.15,
            Shape::Peaks => {
                // Four phases: build for the first 70 % of each, tear down in the rest.
                if (frac * 4.0).fract() < 0.7 {
                    0.2
                } else {
                    0.95
                }
            }
            Shape::Plateau => {
                if frac < 0.3 {
                    0.1
                } else {
                    0.5
                }
            }
            Shape::Random => 0.45,
        };
        let free = !live.is_empty() && (rng.below(1000) as f64) < p_free * 1000.0;
        if free {
            // Recent blocks die first in most programs; pick from the youngest quarter half
            // the time, anywhere otherwise.
            let n = live.len() as u64;
            let k = if rng.below(2) == 0 { n - 1 - rng.below(n.div_ceil(4)) } else { rng.below(n) };
            let addr = live.swap_remove(k as usize);
            push(&mut out, Op::Free { addr });
        } else {
            let size = rng.size();
            let align = if rng.below(50) == 0 { 64 } else { 16 };
            let addr = next_addr;
            next_addr += (size + 15) & !15;
            live.push(addr);
            push(&mut out, Op::Alloc { addr, size, align });
        }
    }
    if shape != Shape::Ramp {
        for addr in live {
            push(&mut out, Op::Free { addr });
        }
    }
    Trace { pid: 0, events: out, ..Trace::default() }
}
