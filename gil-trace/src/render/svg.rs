//! SVG charts (plotters). Drawing is generic over the backend and does no I/O: [`charts_svg`]
//! renders to a String; the CLI writes it.
//!
//! One combined file per trace: title and legend, the timeline of the detail window (one lane
//! per thread, state colours, lock-holder band, handoff lines, datagram ticks, convoy
//! shading), a full-length overview strip, then the I/O stall CDF by component, the
//! handoff-wait CDF per lock and per-thread state shares.
use plotters::{coord::Shift, prelude::*};

use super::charts::ChartData;
use crate::{analysis::contention::StallCause, model::timeline::ThreadState};

pub const WIDTH: u32 = 1400;

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing the chart failed: {0}")]
pub struct RenderError(String);

fn err<E: std::fmt::Debug>(e: E) -> RenderError {
    RenderError(format!("{e:?}"))
}

pub fn state_color(s: ThreadState) -> RGBColor {
    match s {
        ThreadState::Running => RGBColor(46, 125, 50),
        ThreadState::Runnable => RGBColor(249, 168, 37),
        ThreadState::LockWait => RGBColor(198, 40, 40),
        ThreadState::IoWait => RGBColor(21, 101, 192),
        ThreadState::Sleep => RGBColor(200, 200, 200),
    }
}

fn lane_color(i: usize) -> RGBColor {
    const P: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(23, 190, 207),
    ];
    P[i % P.len()]
}

/// A stall cause's color: the color of the thread state it stands for.
pub fn cause_color(cause: StallCause) -> RGBColor {
    match cause {
        StallCause::LockWait => state_color(ThreadState::LockWait),
        StallCause::Runnable => state_color(ThreadState::Runnable),
        StallCause::Running => state_color(ThreadState::Running),
        StallCause::Wakeup => RGBColor(106, 27, 154),
        StallCause::IoWait => state_color(ThreadState::IoWait),
        StallCause::Sleep => RGBColor(150, 150, 150),
        StallCause::Unknown => RGBColor(60, 60, 60),
    }
}

/// Heights of the panels for `lanes` threads.
fn layout(lanes: usize) -> (u32, u32, u32, u32) {
    let header = 64;
    let timeline = 70 + (lanes as u32 + 1) * 22 + 40;
    let overview = 50 + lanes as u32 * 7 + 30;
    let bottom = 340;
    (header, timeline, overview, bottom)
}

pub fn height(lanes: usize) -> u32 {
    let (a, b, c, d) = layout(lanes);
    a + b + c + d
}

fn time_unit(span_ns: u64) -> (f64, &'static str) {
    if span_ns >= 10_000_000 {
        (1e6, "ms")
    } else {
        (1e3, "µs")
    }
}

/// Draws all charts on `root`.
pub fn draw_charts<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    data: &ChartData,
) -> Result<(), RenderError> {
    root.fill(&WHITE).map_err(err)?;
    let (h_header, h_timeline, h_overview, _) = layout(data.lanes.len());
    let (header, rest) = root.split_vertically(h_header);
    let (timeline, rest) = rest.split_vertically(h_timeline);
    let (overview, bottom) = rest.split_vertically(h_overview);
    draw_header(&header, data)?;
    draw_timeline(&timeline, data)?;
    draw_overview(&overview, data)?;
    let cols = bottom.split_evenly((1, 3));
    let (stall_series, stall_colors): (Vec<_>, Vec<_>) = data
        .stall_components
        .iter()
        .map(|(cause, points)| {
            (
                (cause.name().to_string(), points.clone()),
                cause_color(*cause),
            )
        })
        .unzip();
    draw_cdf(
        &cols[0],
        "I/O stall per datagram, by the receiver's state (CDF)",
        &stall_series,
        &stall_colors,
    )?;
    let palette: Vec<RGBColor> = (0..3).map(lane_color).collect();
    draw_cdf(
        &cols[1],
        "Lock wait per contended acquisition (CDF)",
        &data.handoff_waits,
        &palette,
    )?;
    draw_shares(&cols[2], data)
}

fn draw_header<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &ChartData,
) -> Result<(), RenderError> {
    area.draw(&Text::new(
        data.title.clone(),
        (12, 8),
        ("sans-serif", 20).into_font().color(&BLACK),
    ))
    .map_err(err)?;
    let mut x = 12;
    for s in ThreadState::ALL {
        area.draw(&Rectangle::new(
            [(x, 40), (x + 14, 54)],
            state_color(s).filled(),
        ))
        .map_err(err)?;
        area.draw(&Text::new(
            s.name(),
            (x + 18, 41),
            ("sans-serif", 13).into_font(),
        ))
        .map_err(err)?;
        x += 110;
    }
    area.draw(&Rectangle::new(
        [(x, 40), (x + 14, 54)],
        RGBAColor(198, 40, 40, 0.15).filled(),
    ))
    .map_err(err)?;
    area.draw(&Text::new(
        "convoy episode",
        (x + 18, 41),
        ("sans-serif", 13).into_font(),
    ))
    .map_err(err)?;
    x += 130;
    area.draw(&PathElement::new(
        vec![(x + 7, 38), (x + 7, 56)],
        BLACK.stroke_width(1),
    ))
    .map_err(err)?;
    area.draw(&Text::new(
        "datagram arrival",
        (x + 18, 41),
        ("sans-serif", 13).into_font(),
    ))
    .map_err(err)?;
    x += 140;
    area.draw(&PathElement::new(
        vec![(x, 47), (x + 14, 47)],
        RGBColor(90, 90, 90).stroke_width(1),
    ))
    .map_err(err)?;
    area.draw(&Text::new(
        "handoff (releaser → acquirer)",
        (x + 18, 41),
        ("sans-serif", 13).into_font(),
    ))
    .map_err(err)?;
    x += 230;
    area.draw(&Text::new(
        "lock holder: colour of the thread's tab",
        (x, 41),
        ("sans-serif", 13).into_font(),
    ))
    .map_err(err)?;
    if data.hidden_lanes > 0 {
        x += 270;
        let note = format!("{} more threads not drawn", data.hidden_lanes);
        area.draw(&Text::new(note, (x, 41), ("sans-serif", 13).into_font()))
            .map_err(err)?;
    }
    Ok(())
}

fn draw_timeline<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &ChartData,
) -> Result<(), RenderError> {
    let g = &data.detail;
    let (div, unit) = time_unit(g.end_ns - g.start_ns);
    let rel = |t: u64| (t as f64 - data.trace_start_ns as f64) / div;
    let (x0, x1) = (rel(g.start_ns), rel(g.end_ns));
    let lanes = data.lanes.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("Thread timeline ({x0:.1}–{x1:.1} {unit} after start)"),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(190)
        .build_cartesian_2d(x0..x1, (lanes + 1.0)..0f64)
        .map_err(err)?;
    let labels: Vec<String> = data
        .lanes
        .iter()
        .map(|l| l.label.clone())
        .chain(["lock holder".to_string()])
        .collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(format!("time ({unit})"))
        .y_labels(labels.len() * 2 + 1)
        .y_label_formatter(&|y| {
            let f = y.fract();
            if (f - 0.5).abs() < 0.01 {
                labels.get(*y as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(err)?;
    let col_w = (g.end_ns - g.start_ns) as f64 / g.columns as f64;
    let col_x = |c: usize| rel(g.start_ns + (c as f64 * col_w) as u64);
    // Convoy shading behind everything.
    chart
        .draw_series(data.convoys.iter().map(|&(s, e, lane)| {
            let _ = lane;
            Rectangle::new(
                [
                    (rel(s.max(g.start_ns)), 0.0),
                    (rel(e.min(g.end_ns)), lanes + 1.0),
                ],
                RGBAColor(198, 40, 40, 0.12).filled(),
            )
        }))
        .map_err(err)?;
    for lane in 0..data.lanes.len() {
        let y = lane as f64;
        chart
            .draw_series(g.runs(lane).into_iter().map(|(c0, c1, s)| {
                Rectangle::new(
                    [(col_x(c0), y + 0.15), (col_x(c1 + 1), y + 0.85)],
                    state_color(s).filled(),
                )
            }))
            .map_err(err)?;
    }
    // A colour tab at the start of each lane: the lock-holder band uses the same colours.
    let tab = (x1 - x0) / 150.0;
    chart
        .draw_series((0..data.lanes.len()).map(|lane| {
            Rectangle::new(
                [(x0, lane as f64 + 0.3), (x0 + tab, lane as f64 + 0.7)],
                lane_color(lane).filled(),
            )
        }))
        .map_err(err)?;
    let hy = lanes;
    chart
        .draw_series(data.holders.iter().map(|&(s, e, lane)| {
            Rectangle::new(
                [
                    (rel(s), hy + 0.2),
                    (rel(e).max(rel(s) + (x1 - x0) / 2000.0), hy + 0.8),
                ],
                lane_color(lane).filled(),
            )
        }))
        .map_err(err)?;
    chart
        .draw_series(data.handoffs.iter().map(|&(t, from, to)| {
            PathElement::new(
                vec![(rel(t), from as f64 + 0.5), (rel(t), to as f64 + 0.5)],
                RGBColor(90, 90, 90).stroke_width(1),
            )
        }))
        .map_err(err)?;
    chart
        .draw_series(data.arrivals.iter().map(|&(t, lane)| {
            PathElement::new(
                vec![(rel(t), lane as f64 + 0.02), (rel(t), lane as f64 + 0.3)],
                BLACK.stroke_width(1),
            )
        }))
        .map_err(err)?;
    Ok(())
}

fn draw_overview<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &ChartData,
) -> Result<(), RenderError> {
    let g = &data.overview;
    let (div, unit) = time_unit(g.end_ns - g.start_ns);
    let rel = |t: u64| (t as f64 - data.trace_start_ns as f64) / div;
    let (x0, x1) = (rel(g.start_ns), rel(g.end_ns));
    let lanes = data.lanes.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("Overview: whole trace ({unit}); the box is the timeline above"),
            ("sans-serif", 14),
        )
        .margin(10)
        .x_label_area_size(25)
        .y_label_area_size(190)
        .build_cartesian_2d(x0..x1, lanes..0f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_label_style(("sans-serif", 11))
        .draw()
        .map_err(err)?;
    let col_w = (g.end_ns - g.start_ns) as f64 / g.columns as f64;
    let col_x = |c: usize| rel(g.start_ns + (c as f64 * col_w) as u64);
    for lane in 0..data.lanes.len() {
        let y = lane as f64;
        chart
            .draw_series(g.runs(lane).into_iter().map(|(c0, c1, s)| {
                Rectangle::new(
                    [(col_x(c0), y + 0.1), (col_x(c1 + 1), y + 0.9)],
                    state_color(s).filled(),
                )
            }))
            .map_err(err)?;
    }
    let d = &data.detail;
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(rel(d.start_ns), 0.0), (rel(d.end_ns), lanes)],
            BLACK.stroke_width(2),
        )))
        .map_err(err)?;
    Ok(())
}

fn draw_cdf<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[(String, Vec<u64>)],
    colors: &[RGBColor],
) -> Result<(), RenderError> {
    let max_us = series
        .iter()
        .filter_map(|(_, v)| v.last())
        .max()
        .copied()
        .unwrap_or(1_000) as f64
        / 1e3;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 14))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d((0.1f64..max_us.max(1.0) * 1.5).log_scale(), 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("µs (log)")
        .y_desc("fraction ≤ x")
        .x_label_formatter(&|v| {
            if *v >= 1000.0 {
                format!("{:.0}ms", v / 1000.0)
            } else {
                format!("{v:.0}")
            }
        })
        .draw()
        .map_err(err)?;
    let mut any = false;
    for (i, (name, values)) in series.iter().enumerate() {
        let nonzero: Vec<u64> = values.iter().copied().filter(|&v| v > 0).collect();
        if nonzero.is_empty() {
            continue;
        }
        any = true;
        let n = values.len() as f64;
        let zeros = values.len() - nonzero.len();
        let color = colors[i % colors.len()];
        let points = nonzero
            .iter()
            .enumerate()
            .map(|(k, &v)| ((v as f64 / 1e3).max(0.1), (zeros + k + 1) as f64 / n));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    if any {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    } else {
        area.draw(&Text::new(
            "no data",
            (60, 60),
            ("sans-serif", 14).into_font(),
        ))
        .map_err(err)?;
    }
    Ok(())
}

#[allow(clippy::many_single_char_names, reason = "coordinates: x, y, w, h")]
fn draw_shares<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &ChartData,
) -> Result<(), RenderError> {
    let n = data.state_shares.len().max(1) as f64;
    let labels: Vec<String> = data.state_shares.iter().map(|(l, _)| l.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption("Time per state, by thread (%)", ("sans-serif", 14))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(150)
        .build_cartesian_2d(0f64..100.0, n..0f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(labels.len() * 2 + 1)
        .y_label_formatter(&|y| {
            if (y.fract() - 0.5).abs() < 0.01 {
                labels.get(*y as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(err)?;
    for (i, (_, t)) in data.state_shares.iter().enumerate() {
        let total = t.total().max(1) as f64;
        let mut x = 0.0;
        let parts = [t.running, t.runnable, t.lock_wait, t.io_wait, t.sleep];
        let y = i as f64;
        chart
            .draw_series(ThreadState::ALL.iter().zip(parts).map(|(s, v)| {
                let w = 100.0 * v as f64 / total;
                let r =
                    Rectangle::new([(x, y + 0.15), (x + w, y + 0.85)], state_color(*s).filled());
                x += w;
                r
            }))
            .map_err(err)?;
    }
    Ok(())
}

/// Renders the charts to an SVG document.
pub fn charts_svg(data: &ChartData) -> Result<String, RenderError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height(data.lanes.len())))
            .into_drawing_area();
        draw_charts(&root, data)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// Renders several chart sets one under the other (`report --compare --svg`).
pub fn charts_svg_stacked(sets: &[ChartData]) -> Result<String, RenderError> {
    if let [one] = sets {
        return charts_svg(one);
    }
    let heights: Vec<u32> = sets.iter().map(|d| height(d.lanes.len())).collect();
    let mut out = String::new();
    {
        let root =
            SVGBackend::with_string(&mut out, (WIDTH, heights.iter().sum())).into_drawing_area();
        let mut rest = root.clone();
        for (data, h) in sets.iter().zip(&heights) {
            let (area, below) = rest.split_vertically(*h);
            draw_charts(&area, data)?;
            rest = below;
        }
        root.present().map_err(err)?;
    }
    Ok(out)
}
