//! `cargo xtask charts-png [SVG…]`: renders chart SVGs to PNG in headless Chromium (Debian
//! package `chromium`, installed with apt when missing) so a person can look at them the way
//! a browser shows them. Default: the demo's charts.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::workspace_root;

const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
];

fn chromium() -> Result<PathBuf> {
    let path = PathBuf::from("/usr/bin/chromium");
    if !path.exists() {
        eprintln!("[charts-png] installing Debian's chromium (apt-get)");
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        if !ok.success() || !path.exists() {
            bail!("chromium is not installed and apt-get could not install it (try: apt-get update && apt-get install chromium)");
        }
    }
    Ok(path)
}

/// Width and height from the SVG root element.
fn svg_size(svg: &str) -> (u32, u32) {
    let attr = |name: &str| {
        svg.split_once(&format!("{name}=\""))
            .and_then(|(_, rest)| rest.split('"').next())
            .and_then(|v| v.trim_end_matches("px").parse().ok())
    };
    (
        attr("width").unwrap_or(1400),
        attr("height").unwrap_or(1000),
    )
}

pub fn render(svg: &Path) -> Result<PathBuf> {
    let chrome = chromium()?;
    let text = fs::read_to_string(svg).with_context(|| format!("reading {}", svg.display()))?;
    let (w, h) = svg_size(&text);
    let png = svg.with_extension("png");
    let profile = std::env::temp_dir().join(format!("gil-trace-chromium-{}", std::process::id()));
    let url = format!("file://{}", fs::canonicalize(svg)?.display());
    let out = Command::new(&chrome)
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={w},{h}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(url)
        .output()?;
    let _ = fs::remove_dir_all(&profile);
    if !out.status.success() || !png.exists() {
        bail!(
            "chromium failed on {}: {}",
            svg.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("[charts-png] {} -> {}", svg.display(), png.display());
    Ok(png)
}

pub fn run(svgs: &[PathBuf]) -> Result<()> {
    let defaults = [
        workspace_root().join("demo-out/new-2.svg"),
        workspace_root().join("demo-out/priority-2.svg"),
    ];
    let list: Vec<PathBuf> = if svgs.is_empty() {
        defaults.to_vec()
    } else {
        svgs.to_vec()
    };
    for svg in &list {
        if !svg.exists() {
            bail!(
                "{} does not exist (run `cargo xtask demo` first)",
                svg.display()
            );
        }
        render(svg)?;
    }
    Ok(())
}
