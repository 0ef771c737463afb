//! `mallard lab gen` and `mallard replay` as a user runs them.

use std::path::PathBuf;
use std::process::Command;

fn mallard(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mallard")).args(args).output().expect("runs mallard");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mallard-cli-lab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn a_generated_trace_replays_through_every_strategy() {
    let t = scratch("ramp.trace");
    let (ok, _, err) = mallard(&["lab", "gen", "--shape", "ramp", "--events", "5000", "-o", t.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, out, err) = mallard(&["replay", t.to_str().unwrap()]);
    assert!(ok, "{err}");
    for s in ["first-fit", "next-fit", "best-fit", "buddy"] {
        assert!(out.contains(&format!("| {s} |")), "{out}");
    }
    assert!(out.contains("5000 events"), "{out}");
    let (ok, out, _) = mallard(&["replay", "--strategies", "buddy", t.to_str().unwrap()]);
    assert!(ok && out.contains("| buddy |") && !out.contains("| first-fit |"), "{out}");
}

#[test]
fn a_truncated_or_foreign_trace_is_a_clear_error() {
    let t = scratch("cut.trace");
    let (ok, _, err) = mallard(&["lab", "gen", "--events", "1000", "-o", t.to_str().unwrap()]);
    assert!(ok, "{err}");
    let bytes = std::fs::read(&t).unwrap();
    std::fs::write(&t, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, err) = mallard(&["replay", t.to_str().unwrap()]);
    assert!(!ok && err.contains("cut.trace: at byte") && err.contains("ends inside"), "{err}");
    let (ok, _, err) = mallard(&["replay", "Cargo.toml"]);
    assert!(!ok && err.contains("Cargo.toml: at byte 0: not a mallard trace"), "{err}");
    let (ok, _, err) = mallard(&["replay", "--strategies", "worst-fit", t.to_str().unwrap()]);
    assert!(!ok && err.contains("unknown strategy \"worst-fit\""), "{err}");
    let (ok, _, err) = mallard(&["lab", "gen", "--shape", "square", "-o", t.to_str().unwrap()]);
    assert!(!ok && err.contains("unknown shape \"square\""), "{err}");
}

/// Chromium, which the report test needs (CI installs it; `apt-get install chromium`).
fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return c;
        }
    }
    panic!("the HTML report test needs Chromium: apt-get install chromium");
}

#[test]
fn the_html_report_renders_in_headless_chromium() {
    let (t, html, shot) = (scratch("peaks.trace"), scratch("report.html"), scratch("report.png"));
    let (ok, _, err) = mallard(&["lab", "gen", "--shape", "peaks", "--events", "20000", "-o", t.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, _, err) = mallard(&["replay", t.to_str().unwrap(), "--html", html.to_str().unwrap()]);
    assert!(ok, "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 2, "a chart and the size scale");
    let maps = page.matches("data:image/png;base64,").count();
    assert_eq!(maps, mallard_lab::STRATEGIES.len(), "a heap map per strategy");
    // The legend names every line drawn, and the maps share one moment.
    for s in mallard_lab::STRATEGIES {
        assert!(page.contains(&format!("<title>{s}: footprint")), "{s} has no line");
    }
    assert!(page.contains("Heap maps at the moment of peak live bytes (after event "));
    // (Outside the pictures' base64, where any letters may appear.)
    let text: String = page.split("base64,").map(|part| part.split_once('"').map_or(part, |(_, rest)| rest)).collect();
    assert!(!text.contains("NaN") && !text.contains("inf"), "no broken numbers");
    let out = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1000,1400"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("runs chromium");
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    // Not blank: many colours (the chart's lines, the heap maps' sizes), and most of the
    // page's top is not background.
    let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    let colours: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    let inked = pixels.iter().filter(|p| p[..3] != [255, 255, 255]).count();
    assert!(colours.len() > 50, "{} colours: a blank page?", colours.len());
    assert!(inked * 20 > pixels.len(), "{inked} of {} pixels drawn", pixels.len());
}
