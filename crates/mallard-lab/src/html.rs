//! The replay report as one self-contained HTML file (`mallard replay --html`): the figures
//! table, the footprint of every strategy and the live bytes over the trace on one chart, and
//! a heap map per strategy at its moment of peak fragmentation. Pictures are inline SVG; the
//! file loads nothing.

use crate::replay::{HeapMap, Replay};
use crate::{Span, HEAP_BASE};
use std::fmt::Write as _;

const COLOURS: [&str; 8] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// Bytes for people: `1.5 MiB`.
pub fn human(b: u64) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1 << 20) as f64 {
        format!("{:.1} MiB", b / (1 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b} B")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The whole report for the replays of trace `title` (`events` events).
pub fn report(title: &str, events: usize, replays: &[Replay]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mallard replay: {t}</title>\n\
         <style>body{{font:14px system-ui,sans-serif;margin:24px;color:#222;background:#fff}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}svg{{display:block;margin:8px 0 24px}}\
         .small{{color:#666}}</style></head><body>\n<h1>mallard replay: {t}</h1>\n\
         <p class=\"small\">{events} events, replayed through each strategy over a simulated address space.</p>\n",
        t = escape(title)
    );
    h += "<h2>Figures</h2>\n<table><tr><th>strategy</th><th>peak footprint</th><th>peak live</th>\
          <th>footprint at peak live</th><th>fragmentation at peak</th><th>fragmentation, mean</th>\
          <th>internal waste at peak</th><th>largest hole at peak</th></tr>\n";
    for r in replays {
        let f = &r.figures;
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>",
            f.strategy,
            human(f.peak_footprint),
            human(f.peak_live),
            human(f.footprint_at_peak_live),
            f.frag_at_peak,
            f.frag_mean,
            human(f.waste_at_peak),
            human(f.largest_hole_at_peak)
        );
    }
    h += "</table>\n<h2>Footprint and live bytes over the trace</h2>\n";
    h += &chart(events, replays);
    h += "<h2>Heap maps at the moment of peak fragmentation</h2>\n<p class=\"small\">Address runs left to right, \
          top to bottom, from the heap's start to its top. Blocks in use are coloured by size (blue: small, \
          red: large), free space is light grey. mallard's map shows its OS pages: committed ones \
          coloured, the rest of its address space grey.</p>\n";
    for (k, r) in replays.iter().enumerate() {
        let m = &r.map;
        let _ = writeln!(
            h,
            "<h3 style=\"color:{}\">{}</h3><p class=\"small\">after event {}: {} live in a heap of {} ({:.2})</p>",
            COLOURS[k % COLOURS.len()],
            r.figures.strategy,
            m.event,
            human(m.live),
            human(m.footprint),
            if m.live > 0 { m.footprint as f64 / m.live as f64 } else { 0.0 }
        );
        h += &heap_map(m);
    }
    h += "</body></html>\n";
    h
}

/// Footprint of every strategy (a line each) and live bytes (black) against the event index.
fn chart(events: usize, replays: &[Replay]) -> String {
    let (w, ht, left, bottom) = (900.0, 320.0, 70.0, 30.0);
    let ymax = replays.iter().flat_map(|r| r.series.iter().map(|s| s.footprint.max(s.live))).max().unwrap_or(1).max(1);
    let xmax = events.max(1) as f64;
    let x = |e: usize| left + e as f64 / xmax * (w - left - 10.0);
    let y = |b: u64| 10.0 + (1.0 - b as f64 / ymax as f64) * (ht - bottom - 10.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" viewBox=\"0 0 {w} {}\" role=\"img\">\n\
         <rect width=\"{w}\" height=\"{ht}\" fill=\"#fff\"/>\n",
        ht + 24.0 * replays.len().div_ceil(4) as f64,
        ht + 24.0 * replays.len().div_ceil(4) as f64
    );
    for k in 0..=4u64 {
        let b = ymax * k / 4;
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            w - 10.0,
            left - 4.0,
            y(b) + 4.0,
            human(b),
            y = y(b)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">events (0 to {events})</text>",
        (left + w) / 2.0,
        ht - 8.0
    );
    let line = |pts: &mut dyn Iterator<Item = (usize, u64)>| {
        pts.map(|(e, b)| format!("{:.1},{:.1}", x(e), y(b))).collect::<Vec<_>>().join(" ")
    };
    for (k, r) in replays.iter().enumerate() {
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>",
            COLOURS[k % COLOURS.len()],
            line(&mut r.series.iter().map(|p| (p.event, p.footprint)))
        );
    }
    if let Some(r) = replays.first() {
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"#000\" stroke-width=\"2\" points=\"{}\"/>",
            line(&mut r.series.iter().map(|p| (p.event, p.live)))
        );
    }
    let names = replays.iter().map(|r| r.figures.strategy).chain(["live bytes"]);
    for (k, name) in names.enumerate() {
        let colour = if k < replays.len() { COLOURS[k % COLOURS.len()] } else { "#000" };
        let (lx, ly) = (left + 200.0 * (k % 4) as f64, ht + 14.0 + 24.0 * (k / 4) as f64);
        let _ = writeln!(
            s,
            "<rect x=\"{lx}\" y=\"{}\" width=\"14\" height=\"4\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">{name}</text>",
            ly - 4.0,
            lx + 20.0,
            ly + 2.0
        );
    }
    s += "</svg>\n";
    s
}

/// The heap laid out in rows of pixels: each pixel shows the bytes it covers, grey where free,
/// coloured by the size of the largest block in it where in use (lighter when partly free).
fn heap_map(m: &HeapMap) -> String {
    const W: usize = 900;
    const ROWS: usize = 48;
    const ROW_H: usize = 6;
    let cells = W * ROWS;
    let size = m.extent.max(1);
    let per = (size as f64 / cells as f64).max(1.0);
    // Per cell: bytes in use and the largest block touching it.
    let mut used = vec![0f64; cells];
    let mut biggest = vec![0u64; cells];
    for &Span { start, len, free } in &m.spans {
        if free {
            continue;
        }
        let (a, b) = ((start - HEAP_BASE) as f64 / per, (start - HEAP_BASE + len) as f64 / per);
        let (first, last) = (a.floor() as usize, (b.ceil() as usize).min(cells));
        for c in first..last {
            let overlap = b.min(c as f64 + 1.0) - a.max(c as f64);
            used[c] += overlap.max(0.0);
            biggest[c] = biggest[c].max(len);
        }
    }
    let colour = |c: usize| -> String {
        let fill = used[c].min(1.0);
        if fill < 0.02 {
            return "#eeeeee".into();
        }
        // 16 B (blue, 220°) to 1 MiB and up (red, 0°).
        let log = (biggest[c].max(16) as f64).log2().clamp(4.0, 20.0);
        let hue = 220.0 * (20.0 - log) / 16.0;
        let light = 90.0 - 45.0 * fill;
        format!("hsl({hue:.0},70%,{light:.0}%)")
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" viewBox=\"0 0 {W} {}\" role=\"img\">\n",
        ROWS * ROW_H,
        ROWS * ROW_H
    );
    // One rect per run of cells of the same colour in a row.
    for row in 0..ROWS {
        let mut col = 0;
        while col < W {
            let c = colour(row * W + col);
            let mut end = col + 1;
            while end < W && colour(row * W + end) == c {
                end += 1;
            }
            let _ = writeln!(
                s,
                "<rect x=\"{col}\" y=\"{}\" width=\"{}\" height=\"{ROW_H}\" fill=\"{c}\"/>",
                row * ROW_H,
                end - col
            );
            col = end;
        }
    }
    s += "</svg>\n";
    s
}
