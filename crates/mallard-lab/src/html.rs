//! The replay report as one self-contained HTML file (`mallard replay --html`): the figures
//! table, the footprint of every strategy and the live bytes over the trace on one chart, and
//! a heap map per strategy at the moment of peak live bytes (one moment and one address scale
//! for all, with a legend of the size colours). Pictures are inline SVG; the file loads
//! nothing. Also the page of `mallard report --html` (`profile_page`).

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
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}}th{{white-space:normal}}\
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
    let extent = replays.iter().map(|r| r.map.extent).max().unwrap_or(0);
    let moment = replays.first().map_or(0, |r| r.map.event);
    let _ = writeln!(
        h,
        "<h2>Heap maps at the moment of peak live bytes (after event {moment})</h2>\n<p class=\"small\">The same \
         moment for every strategy, drawn to the same scale: address runs left to right, top to bottom, {} a row, \
         from the heap's start; each map ends at its heap's top. Blocks in use are coloured by the size of the \
         biggest block in the pixel (scale below); free space is light grey. mallard's map shows its address \
         space, committed pages coloured, the rest grey.</p>",
        human(extent.div_ceil(MAP_ROWS as u64).max(1))
    );
    h += &size_scale();
    for (k, r) in replays.iter().enumerate() {
        let m = &r.map;
        let _ = writeln!(
            h,
            "<h3 style=\"color:{}\">{}</h3><p class=\"small\">{} live in a heap of {} ({:.2} times the live bytes)</p>",
            COLOURS[k % COLOURS.len()],
            r.figures.strategy,
            human(m.live),
            human(m.footprint),
            if m.live > 0 { m.footprint as f64 / m.live as f64 } else { 0.0 }
        );
        h += &heap_map(m, extent);
    }
    h += "</body></html>\n";
    h
}

/// Dash patterns, so that lines drawn over each other (two strategies with the same footprint)
/// stay apart.
const DASHES: [&str; 4] = ["", "8 4", "2 3", "12 3 2 3"];

/// The frame of a chart: bytes up the side and something (events, time) along the bottom,
/// both from 0 with round ticks and a title, and a legend of `items` entries under it.
struct Plot {
    ht: f64,
    xmax: f64,
    xstep: f64,
    ytop: f64,
    ystep: f64,
}

impl Plot {
    const W: f64 = 1000.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 16.0;
    const BOTTOM: f64 = 44.0;

    fn new(ht: f64, xmax: f64, ymax: f64) -> Plot {
        let (xmax, ymax) = (xmax.max(1.0), ymax.max(1.0));
        let ystep = nice_step(ymax, 5.0, true);
        Plot { ht, xmax, xstep: nice_step(xmax, 8.0, false), ytop: (ymax / ystep).ceil() * ystep, ystep }
    }

    fn x(&self, v: f64) -> f64 {
        Self::LEFT + v / self.xmax * (Self::W - Self::LEFT - Self::RIGHT)
    }

    fn y(&self, b: f64) -> f64 {
        Self::TOP + (1.0 - b / self.ytop) * (self.ht - Self::TOP - Self::BOTTOM)
    }

    /// The SVG's start: its size (with room for the legend), the grid, the ticks labelled by
    /// `tick(value, step)`, the axes and their titles.
    fn start(
        &self,
        items: usize,
        label: &str,
        x_title: &str,
        y_title: &str,
        tick: &dyn Fn(f64, f64) -> String,
    ) -> String {
        let (w, left, right, top, bottom, ht) = (Self::W, Self::LEFT, Self::RIGHT, Self::TOP, Self::BOTTOM, self.ht);
        let total_h = ht + 22.0 * items.div_ceil(4) as f64 + 8.0;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{total_h}\" viewBox=\"0 0 {w} {total_h}\" role=\"img\" aria-label=\"{label}\">\n\
             <rect width=\"{w}\" height=\"{total_h}\" fill=\"#fff\"/>\n"
        );
        let mut v = 0.0;
        while v <= self.ytop + 0.5 {
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#e4e4e4\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
                w - right,
                left - 6.0,
                self.y(v) + 4.0,
                human(v as u64),
                yy = self.y(v)
            );
            v += self.ystep;
        }
        let mut t = 0.0;
        while t <= self.xmax + 0.5 {
            let _ = writeln!(
                s,
                "<line x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"#999\"/><text x=\"{xx:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
                ht - bottom,
                ht - bottom + 4.0,
                ht - bottom + 16.0,
                tick(t, self.xstep),
                xx = self.x(t)
            );
            t += self.xstep;
        }
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{b}\" stroke=\"#999\"/><line x1=\"{left}\" x2=\"{}\" y1=\"{b}\" y2=\"{b}\" stroke=\"#999\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">{x_title}</text>\
             <text transform=\"translate(14 {}) rotate(-90)\" font-size=\"12\" text-anchor=\"middle\">{y_title}</text>",
            w - right,
            (left + w - right) / 2.0,
            ht - 10.0,
            (top + ht - bottom) / 2.0,
            b = ht - bottom
        );
        s
    }

    /// Legend entry `k`: a short line drawn as the chart's, and its name.
    fn legend(&self, s: &mut String, k: usize, name: &str, colour: &str, dash: &str) {
        let (lx, ly) = (Self::LEFT + 230.0 * (k % 4) as f64, self.ht + 14.0 + 22.0 * (k / 4) as f64);
        let _ = writeln!(
            s,
            "<line x1=\"{lx}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>",
            lx + 28.0,
            lx + 34.0,
            ly + 4.0,
            escape(name)
        );
    }
}

/// Footprint of every strategy (a line each) and live bytes (black) against the event index:
/// titled axes, round ticks, a tooltip on each line.
fn chart(events: usize, replays: &[Replay]) -> String {
    let ymax = replays.iter().flat_map(|r| r.series.iter().map(|s| s.footprint.max(s.live))).max().unwrap_or(1);
    let plot = Plot::new(340.0, events as f64, ymax as f64);
    let mut s = plot.start(
        replays.len() + 1,
        "footprint over the trace",
        "events of the trace (allocations, frees, reallocs), in order",
        "bytes",
        &|e, _| (e as u64).to_string(),
    );
    let line = |pts: &mut dyn Iterator<Item = (usize, u64)>| {
        pts.map(|(e, b)| format!("{:.1},{:.1}", plot.x(e as f64), plot.y(b as f64))).collect::<Vec<_>>().join(" ")
    };
    for (k, r) in replays.iter().enumerate() {
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"{}\" points=\"{}\"><title>{}: footprint, peak {}</title></polyline>",
            COLOURS[k % COLOURS.len()],
            DASHES[k % DASHES.len()],
            line(&mut r.series.iter().map(|p| (p.event, p.footprint))),
            r.figures.strategy,
            human(r.figures.peak_footprint)
        );
        plot.legend(&mut s, k, r.figures.strategy, COLOURS[k % COLOURS.len()], DASHES[k % DASHES.len()]);
    }
    if let Some(r) = replays.first() {
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"#000\" stroke-width=\"2.5\" points=\"{}\"><title>live bytes, peak {}</title></polyline>",
            line(&mut r.series.iter().map(|p| (p.event, p.live))),
            human(r.figures.peak_live)
        );
    }
    plot.legend(&mut s, replays.len(), "live bytes", "#000", "");
    s += "</svg>\n";
    s
}

/// Pixel rows of a heap map.
const MAP_ROWS: usize = 48;

/// The colour of a pixel whose biggest block has `size` bytes, `fill` of it in use: 16 B and
/// less blue (hue 220°), 1 MiB and more red (0°), through teal, green, yellow and orange.
fn size_colour(size: u64, fill: f64) -> String {
    let [r, g, b] = size_rgb(size, fill);
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// `size_colour` as red, green, blue (HSL with 70 % saturation, converted).
fn size_rgb(size: u64, fill: f64) -> [u8; 3] {
    let log = (size.max(16) as f64).log2().clamp(4.0, 20.0);
    let hue = 220.0 * (20.0 - log) / 16.0;
    let light = (90.0 - 45.0 * fill.clamp(0.0, 1.0)) / 100.0;
    let c = (1.0 - (2.0 * light - 1.0f64).abs()) * 0.7;
    let x = c * (1.0 - ((hue / 60.0) % 2.0 - 1.0).abs());
    let (r, g, b) = match hue {
        h if h < 60.0 => (c, x, 0.0),
        h if h < 120.0 => (x, c, 0.0),
        h if h < 180.0 => (0.0, c, x),
        _ => (0.0, x, c),
    };
    let m = light - c / 2.0;
    [r, g, b].map(|v| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8)
}

/// The legend of the heap maps' colours: the scale of block sizes, and free space.
fn size_scale() -> String {
    let mut s = String::from(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1000\" height=\"44\" viewBox=\"0 0 1000 44\" role=\"img\" aria-label=\"block size colours\">\n",
    );
    for k in 0..=16 {
        let size = 16u64 << k;
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"4\" width=\"40\" height=\"14\" fill=\"{}\"/><text x=\"{}\" y=\"32\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            80 + 40 * k,
            size_colour(size, 1.0),
            100 + 40 * k,
            if k % 2 == 0 { human(size) } else { String::new() }
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"74\" y=\"15\" font-size=\"11\" text-anchor=\"end\">block size</text><rect x=\"800\" y=\"4\" width=\"40\" height=\"14\" fill=\"#eeeeee\" stroke=\"#ccc\"/><text x=\"846\" y=\"15\" font-size=\"11\">free</text>"
    );
    s += "</svg>\n";
    s
}

/// The heap laid out in rows of pixels, `scale` bytes of address space to the whole map (the
/// largest heap of the maps shown, so that all are drawn to one scale): each pixel shows the
/// bytes it covers, grey where free, coloured by the size of the largest block in it where in
/// use (lighter when partly free). A PNG inside the page (its size does not grow with the
/// heap's), row starts labelled with their offset from the heap's start.
fn heap_map(m: &HeapMap, scale: u64) -> String {
    use base64::Engine as _;
    const W: usize = 900;
    const ROW_H: usize = 6;
    let cells = W * MAP_ROWS;
    let per = (scale.max(m.extent).max(1) as f64 / cells as f64).max(1.0);
    let drawn = ((m.extent as f64 / per).ceil() as usize).min(cells);
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
    let rows = drawn.div_ceil(W).max(1);
    let mut pixels = Vec::with_capacity(W * rows * ROW_H * 3);
    for row in 0..rows {
        let line: Vec<u8> = (0..W)
            .flat_map(|col| {
                let c = row * W + col;
                if c >= drawn {
                    [255, 255, 255] // past the heap's top
                } else if used[c] < 0.02 {
                    [0xee, 0xee, 0xee]
                } else {
                    size_rgb(biggest[c], used[c])
                }
            })
            .collect();
        for _ in 0..ROW_H {
            pixels.extend_from_slice(&line);
        }
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, W as u32, (rows * ROW_H) as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        if let Ok(mut w) = enc.write_header() {
            let _ = w.write_image_data(&pixels);
        }
    }
    let mut labels = String::new();
    for row in (0..rows).step_by(8) {
        let _ = write!(
            labels,
            "<span style=\"position:absolute;right:4px;top:{}px\">+{}</span>",
            row * ROW_H,
            human((row as f64 * W as f64 * per) as u64)
        );
    }
    format!(
        "<div style=\"display:flex;align-items:flex-start\"><div style=\"position:relative;width:70px;height:{h}px;font-size:9px\">{labels}</div>\
         <img alt=\"heap map\" width=\"{W}\" height=\"{h}\" style=\"image-rendering:pixelated\" src=\"data:image/png;base64,{}\"></div>\n",
        base64::engine::general_purpose::STANDARD.encode(&png_bytes),
        h = rows * ROW_H
    )
}

/// At most `max` characters of `name` (C++ and Rust names of templates run to kilobytes): a
/// page stays small, and the whole name is in the JSON.
fn shorten(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        return name.to_owned();
    }
    let head: String = name.chars().take(max - 1).collect();
    head + "…"
}

/// A round step for an axis from 0 to `max` with about `n` ticks: 1, 2 or 5 times a power of
/// ten (or, for bytes, of 1024 times those).
pub fn nice_step(max: f64, n: f64, bytes: bool) -> f64 {
    let raw = (max / n).max(if bytes { 1.0 } else { f64::MIN_POSITIVE });
    let unit = if bytes { 1024f64.powi((raw.log(1024.0).floor() as i32).max(0)) } else { 1.0 };
    let r = raw / unit;
    let pow = 10f64.powf(r.log10().floor());
    let m = r / pow;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * pow * unit
}

/// Seconds for an axis: `0.25 s`, `12 ms`.
fn axis_time(ns: f64, step: f64) -> String {
    if step >= 1e9 {
        format!("{:.0} s", ns / 1e9)
    } else if step >= 1e8 {
        format!("{:.1} s", ns / 1e9)
    } else if step >= 1e6 {
        format!("{:.0} ms", ns / 1e6)
    } else if step >= 1e3 {
        format!("{:.0} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// The `mallard report --html` page: the summary, live bytes over time (all threads and the
/// threads with the highest peaks, the peak marked), flame graphs of bytes allocated and of
/// bytes live at the peak, and the tables with each site's full stack. One file; the flame
/// graphs (inferno's SVG, with its search and zoom) are inline frames of the same file.
pub fn profile_page(p: &crate::profile::Profile) -> String {
    use crate::profile::short_label;
    use crate::report::{folded, plural, seconds, Measure};
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mallard report: {t}</title>\n\
         <style>body{{font:14px system-ui,sans-serif;margin:24px;color:#222;background:#fff;max-width:1200px}}\
         table{{border-collapse:collapse;margin-bottom:16px}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}}\
         th:nth-child(2),td:nth-child(2){{text-align:left}}details pre{{margin:4px 0;font-size:12px;white-space:pre-wrap}}\
         iframe{{border:0;width:100%;height:420px}}.small{{color:#555}}svg text{{font-family:system-ui,sans-serif}}</style></head><body>\n\
         <h1>mallard report: {t}</h1>\n",
        t = escape(&p.title)
    );
    let _ = writeln!(
        h,
        "<p>{}<br><b>Peak live: {}</b> in {}, at {}. <b>Never freed: {}</b> in {}.</p>",
        escape(&crate::report::what_happened(p)),
        human(p.peak.bytes),
        plural(p.peak.blocks, "block"),
        seconds(p.peak_time_ns),
        human(p.leaked.bytes),
        plural(p.leaked.blocks, "block")
    );
    if !p.symbolized {
        h += "<p class=\"small\">The trace has no memory map: call sites are shown as addresses.</p>\n";
    }
    if !p.changed_files.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"small\">Changed since the recording (rebuilt or replaced), so their frames are shown as \
             module+0xADDR: {}.</p>",
            escape(&p.changed_files.join(", "))
        );
    }
    h += "<h2>Live bytes over time</h2>\n";
    h += &timeline(p);
    if p.processes.len() > 1 {
        h += "<h2>Processes of the run</h2>\n<p class=\"small\">The trace's program images (before and after an \
              exec) and the traces of the processes it started (FILE.PID), on one clock.</p>\n";
        h += &processes_chart(&p.processes);
        h += "<table><tr><th>pid</th><th>program</th><th>file (image)</th><th>events</th><th>peak live</th><th>never freed</th></tr>\n";
        // The 50 with the highest peaks (a shim starts dozens of small ones).
        let mut by_peak: Vec<&crate::profile::ProcessRow> = p.processes.iter().collect();
        by_peak.sort_by_key(|r| std::cmp::Reverse(r.peak.bytes));
        by_peak.truncate(50);
        for r in p.processes.iter().filter(|r| by_peak.iter().any(|s| std::ptr::eq(*s, *r))) {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                r.pid,
                escape(&r.program),
                escape(r.file.rsplit('/').next().unwrap_or(&r.file)),
                r.image,
                r.events,
                human(r.peak.bytes),
                human(r.leaked.bytes)
            );
        }
        h += "</table>\n";
    }
    for (m, title) in [
        (Measure::LiveAtPeak, "Flame graph: bytes live at the peak"),
        (Measure::Allocated, "Flame graph: bytes allocated"),
    ] {
        // Names shortened for the page (the --folded export keeps them whole).
        let lines: String = folded(p, m)
            .lines()
            .map(|l| {
                let (stack, n) = l.rsplit_once(' ').unwrap_or((l, "0"));
                stack.split(';').map(|f| shorten(f, 120)).collect::<Vec<_>>().join(";") + " " + n + "\n"
            })
            .collect();
        let _ = writeln!(h, "<h2>{title}</h2>");
        if lines.is_empty() {
            h += "<p class=\"small\">(nothing)</p>\n";
            continue;
        }
        let mut opt = inferno::flamegraph::Options::default();
        opt.title = title.to_owned();
        opt.count_name = "bytes".to_owned();
        opt.name_type = "Call site:".to_owned();
        opt.deterministic = true;
        opt.image_width = Some(1140);
        opt.colors = inferno::flamegraph::color::Palette::Multi(inferno::flamegraph::color::MultiPalette::Rust);
        let mut svg = Vec::new();
        if inferno::flamegraph::from_lines(&mut opt, lines.lines(), &mut svg).is_ok() {
            let svg = String::from_utf8_lossy(&svg);
            // The frame as tall as the picture (inferno sets its height from the deepest stack).
            let height = svg
                .split_once("<svg ")
                .and_then(|(_, rest)| rest.split_once("height=\""))
                .and_then(|(_, rest)| rest.split_once('"'))
                .and_then(|(v, _)| v.parse::<f64>().ok())
                .unwrap_or(400.0);
            let _ = writeln!(
                h,
                "<iframe title=\"{title}\" style=\"height:{:.0}px\" srcdoc=\"{}\"></iframe>\n<p class=\"small\">Each box \
                 is a function, its callers below it; its width is the bytes of the stacks through it. Hover for the \
                 figures, click to zoom, Ctrl-F to search.</p>",
                height + 16.0,
                escape(&format!("<!DOCTYPE html><html><body style=\"margin:0\">{svg}</body></html>"))
            );
        }
    }
    let table =
        |h: &mut String, title: &str, m: Measure, head: &str, cells: &dyn Fn(&crate::profile::Site) -> String| {
            let mut rows: Vec<(usize, &crate::profile::Site)> =
                p.sites.iter().enumerate().filter(|(_, s)| m.of(s) > 0).collect();
            rows.sort_by_key(|(_, s)| std::cmp::Reverse(m.of(s)));
            let _ = writeln!(
                h,
                "<h2>{title}</h2>\n<table><tr><th>#</th><th>call site (click for the stack)</th>{head}</tr>"
            );
            if rows.is_empty() {
                h.push_str("<tr><td></td><td>(none)</td></tr>\n");
            }
            for (id, s) in rows.into_iter().take(50) {
                let _ = writeln!(
                    h,
                    "<tr><td>{id}</td><td><details><summary>{}</summary><pre>{}</pre></details></td>{}</tr>",
                    escape(&shorten(&short_label(&s.stack, 3), 300)),
                    escape(&s.stack.iter().map(|f| shorten(f, 300)).collect::<Vec<_>>().join("\n")),
                    cells(s)
                );
            }
            h.push_str("</table>\n");
        };
    table(&mut h, "Live at the peak, by call site", Measure::LiveAtPeak, "<th>blocks</th><th>bytes</th>", &|s| {
        format!("<td>{}</td><td>{}</td>", s.live_at_peak.blocks, human(s.live_at_peak.bytes))
    });
    table(&mut h, "Leaks: never freed, by call site", Measure::Leaked, "<th>blocks</th><th>bytes</th>", &|s| {
        format!("<td>{}</td><td>{}</td>", s.leaked.blocks, human(s.leaked.bytes))
    });
    table(&mut h, "Biggest allocation sites", Measure::Allocated, "<th>allocations</th><th>bytes</th>", &|s| {
        format!("<td>{}</td><td>{}</td>", s.allocated.blocks, human(s.allocated.bytes))
    });
    h += "</body></html>\n";
    h
}

/// Live bytes of each process of a run against one clock (the processes with the highest
/// peaks; the rest are in the table).
fn processes_chart(rows: &[crate::profile::ProcessRow]) -> String {
    use crate::report::seconds;
    let mut shown: Vec<&crate::profile::ProcessRow> = rows.iter().collect();
    shown.sort_by_key(|r| std::cmp::Reverse(r.peak.bytes));
    shown.truncate(COLOURS.len());
    let t0 = rows.iter().filter(|r| r.start_ns > 0).map(|r| r.start_ns + r.first_ns).min().unwrap_or(0) as f64;
    // On the run's clock (a trace without one: its own).
    let at = |r: &crate::profile::ProcessRow, t: u64| {
        if r.start_ns > 0 {
            (r.start_ns as f64 - t0 + t as f64).max(0.0)
        } else {
            t as f64
        }
    };
    let tmax = shown.iter().map(|r| at(r, r.duration_ns)).fold(1.0, f64::max);
    let ymax = shown.iter().map(|r| r.peak.bytes).max().unwrap_or(1);
    let plot = Plot::new(300.0, tmax, ymax as f64);
    let mut s = plot.start(
        shown.len(),
        "live bytes per process",
        "time since the first process started recording",
        "live bytes",
        &axis_time,
    );
    for (k, r) in shown.iter().enumerate() {
        let mut pts = vec![format!("{:.1},{:.1}", plot.x(at(r, r.first_ns)), plot.y(0.0))];
        pts.extend(r.live.iter().map(|&(t, b)| format!("{:.1},{:.1}", plot.x(at(r, t)), plot.y(b as f64))));
        let (colour, dash) = (COLOURS[k % COLOURS.len()], DASHES[k % DASHES.len()]);
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\" points=\"{}\"><title>{} (pid {}): peak {} at +{}</title></polyline>",
            pts.join(" "),
            escape(&r.program),
            r.pid,
            human(r.peak.bytes),
            seconds(at(r, r.first_ns) as u64)
        );
        plot.legend(&mut s, k, &format!("{} {} ({})", r.program, r.pid, human(r.peak.bytes)), colour, dash);
    }
    s += "</svg>\n";
    s
}

/// Live bytes against time: all threads (black) and the threads with the highest peaks
/// (colours, dashed where they would hide each other), titled axes with round ticks, the peak
/// marked, a tooltip on every stretch of time.
fn timeline(p: &crate::profile::Profile) -> String {
    use crate::report::seconds;
    let tl = &p.timeline;
    if tl.live.is_empty() {
        return "<p class=\"small\">(no events)</p>\n".into();
    }
    let tmax = *tl.time_ns.last().unwrap_or(&1) as f64;
    let ymax = tl.live.iter().copied().chain(tl.rss.iter().map(|r| r.1)).max().unwrap_or(1);
    let plot = Plot::new(340.0, tmax, ymax as f64);
    let items = 1 + tl.threads.len() + usize::from(!tl.rss.is_empty());
    let mut s =
        plot.start(items, "live bytes over time", "time since the program started recording", "live bytes", &axis_time);
    // Steps: each value holds over its stretch.
    let points = |vals: &[u64]| {
        let mut prev_x = plot.x(0.0);
        let mut out = Vec::with_capacity(vals.len() * 2);
        for (k, &b) in vals.iter().enumerate() {
            let nx = plot.x(tl.time_ns[k] as f64);
            out.push(format!("{prev_x:.1},{:.1} {nx:.1},{:.1}", plot.y(b as f64), plot.y(b as f64)));
            prev_x = nx;
        }
        out.join(" ")
    };
    for (k, line) in tl.threads.iter().enumerate() {
        let (colour, dash) = (COLOURS[k % COLOURS.len()], if k % 2 == 1 { "6 3" } else { "" });
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" stroke-dasharray=\"{dash}\" points=\"{}\"><title>thread {}: peak {}</title></polyline>",
            points(&line.live),
            line.thread,
            human(line.peak)
        );
        plot.legend(&mut s, k + 1, &format!("thread {} (peak {})", line.thread, human(line.peak)), colour, dash);
    }
    if !tl.rss.is_empty() {
        let pts: Vec<String> =
            tl.rss.iter().map(|&(t, b)| format!("{:.1},{:.1}", plot.x(t as f64), plot.y(b as f64))).collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"#888\" stroke-width=\"1.5\" stroke-dasharray=\"2 2\" points=\"{}\"><title>resident set (RSS): peak {}</title></polyline>",
            pts.join(" "),
            human(tl.rss.iter().map(|r| r.1).max().unwrap_or(0))
        );
        plot.legend(&mut s, tl.threads.len() + 1, "resident set (RSS)", "#888", "2 2");
    }
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"#000\" stroke-width=\"2\" points=\"{}\"><title>all threads</title></polyline>",
        points(&tl.live)
    );
    plot.legend(&mut s, 0, "all threads", "#000", "");
    // Tooltips: one invisible column per stretch.
    let mut prev_x = plot.x(0.0);
    for (k, &b) in tl.live.iter().enumerate() {
        let nx = plot.x(tl.time_ns[k] as f64);
        let _ = writeln!(
            s,
            "<rect x=\"{prev_x:.1}\" y=\"{}\" width=\"{:.2}\" height=\"{}\" fill=\"transparent\"><title>{}: {} live</title></rect>",
            Plot::TOP,
            (nx - prev_x).max(0.5),
            plot.ht - Plot::BOTTOM - Plot::TOP,
            seconds(tl.time_ns[k]),
            human(b)
        );
        prev_x = nx;
    }
    let (px, py) = (plot.x(p.peak_time_ns as f64), plot.y(p.peak.bytes as f64));
    let anchor = if px > Plot::W * 0.75 { "end" } else { "start" };
    let _ = writeln!(
        s,
        "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"5\" fill=\"#d62728\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"#d62728\" text-anchor=\"{anchor}\">peak: {} at {}</text>",
        if anchor == "end" { px - 8.0 } else { px + 8.0 },
        (py + 4.0).max(Plot::TOP + 12.0),
        human(p.peak.bytes),
        seconds(p.peak_time_ns)
    );
    s += "</svg>\n";
    s
}
