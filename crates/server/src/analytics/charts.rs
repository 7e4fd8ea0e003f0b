//! Charts drawn on the server as SVG, so the dashboard reads without JavaScript. Every text
//! that reaches the markup is escaped here; the result is inserted into templates as is.

use std::fmt::Write as _;

use mcp_oauth_core::analytics::Millis;
use mcp_oauth_core::analytics::summary::rfc3339;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 170.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

/// One line of a chart. `class` picks its colour in the stylesheet (`s0`…`s3`, `err`).
pub struct Line<'a> {
    pub label: &'a str,
    pub class: &'a str,
    /// `(step start, value)`, any order; missing steps count as 0.
    pub points: Vec<(Millis, f64)>,
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A compact number for an axis: 1234 → "1.2k".
fn compact(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.1}M", v / 1_000_000.0)
    } else if v >= 1_000.0 {
        format!("{:.1}k", v / 1_000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v < 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// A line chart of `lines` over `[from, to)` in steps of `step` ms, titled `title` (also its
/// accessible name). Values are drawn at each step's start; a step without a point is 0.
pub fn line_chart(
    id: &str,
    title: &str,
    lines: &[Line<'_>],
    from: Millis,
    to: Millis,
    step: Millis,
) -> String {
    let step = step.max(1);
    let first = from - from.rem_euclid(step);
    let steps = ((to - first + step - 1) / step).clamp(1, 2_000);
    let series: Vec<Vec<f64>> = lines
        .iter()
        .map(|l| {
            let mut values = vec![0.0; steps as usize];
            for &(at, v) in &l.points {
                let i = (at - first).div_euclid(step);
                if (0..steps).contains(&i) {
                    values[i as usize] += v;
                }
            }
            values
        })
        .collect();
    let max = series.iter().flatten().fold(0.0f64, |m, &v| m.max(v));
    // An empty chart still needs a scale; a small one (latencies below a millisecond) keeps it.
    let max = if max > 0.0 { max } else { 1.0 };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |i: usize| LEFT + plot_w * (i as f64 + 0.5) / steps as f64;
    let y = |v: f64| TOP + plot_h * (1.0 - v / max);

    let mut svg = String::new();
    let total: Vec<String> = lines
        .iter()
        .zip(&series)
        .map(|(l, v)| format!("{}: {}", l.label, compact(v.iter().sum())))
        .collect();
    let _ = write!(
        svg,
        r#"<svg class="chart" id="{id}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{id}-title {id}-desc"><title id="{id}-title">{}</title><desc id="{id}-desc">{} from {} to {}</desc>"#,
        escape(title),
        escape(&total.join("; ")),
        rfc3339(from),
        rfc3339(to),
    );
    // Axes and the top value.
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}"/><line class="axis" x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}"/><text class="tick" x="{tx}" y="{ty}" text-anchor="end">{max}</text><text class="tick" x="{tx}" y="{b}" text-anchor="end">0</text>"#,
        b = TOP + plot_h,
        r = WIDTH - RIGHT,
        tx = LEFT - 4.0,
        ty = TOP + 8.0,
        max = compact(max),
    );
    let _ = write!(
        svg,
        r#"<text class="tick" x="{LEFT}" y="{y0}">{}</text><text class="tick" x="{r}" y="{y0}" text-anchor="end">{}</text>"#,
        escape(&short_time(from)),
        escape(&short_time(to)),
        y0 = HEIGHT - 6.0,
        r = WIDTH - RIGHT,
    );
    // A legend: each line's label, in its colour, at the top left of the plot.
    for (i, line) in lines.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<text class="legend {}" x="{x}" y="{y}">{}</text>"#,
            escape(line.class),
            escape(line.label),
            x = LEFT + 6.0,
            y = TOP + 10.0 + 14.0 * i as f64,
        );
    }
    for (line, values) in lines.iter().zip(&series) {
        let mut points = String::new();
        for (i, &v) in values.iter().enumerate() {
            let _ = write!(points, "{:.1},{:.1} ", x(i), y(v));
        }
        let _ = write!(
            svg,
            r#"<polyline class="line {}" points="{}"><title>{}</title></polyline>"#,
            escape(line.class),
            points.trim_end(),
            escape(line.label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// `MM-DD HH:MM` (UTC) for axis labels.
fn short_time(at: Millis) -> String {
    let full = rfc3339(at);
    full.get(5..16).unwrap_or(&full).replace('T', " ")
}

/// Horizontal bars for a distribution: `(label, value)`.
pub fn bars(id: &str, title: &str, items: &[(String, u64)]) -> String {
    let max = items.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1) as f64;
    let row = 22.0;
    let height = (items.len().max(1) as f64) * row + 4.0;
    let mut svg = format!(
        r#"<svg class="bars" id="{id}" viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="{id}-title"><title id="{id}-title">{}</title>"#,
        escape(title)
    );
    for (i, (label, value)) in items.iter().enumerate() {
        let y = i as f64 * row + 2.0;
        let w = (WIDTH - 260.0) * (*value as f64) / max;
        let _ = write!(
            svg,
            r#"<text class="tick" x="0" y="{ty}">{}</text><rect class="bar" x="200" y="{y}" width="{w:.1}" height="{h}"/><text class="tick" x="{vx:.1}" y="{ty}">{value}</text>"#,
            escape(label),
            ty = y + 14.0,
            h = row - 6.0,
            vx = 204.0 + w,
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let svg = line_chart(
            "c",
            "<script>alert(1)</script>",
            &[Line {
                label: "a\"b",
                class: "s0",
                points: vec![(0, 1.0)],
            }],
            0,
            60_000,
            60_000,
        );
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.contains("a&quot;b"));
        let b = bars("b", "t", &[("<x>".into(), 3)]);
        assert!(b.contains("&lt;x&gt;") && !b.contains("<x>"));
    }

    #[test]
    fn points_land_in_their_steps_and_missing_steps_are_zero() {
        let svg = line_chart(
            "c",
            "t",
            &[Line {
                label: "calls",
                class: "s0",
                points: vec![(0, 4.0), (120_000, 2.0)],
            }],
            0,
            180_000,
            60_000,
        );
        // Three steps: 4, 0, 2; the top of the axis is the maximum.
        assert!(svg.contains(">4</text>"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 1);
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), 3);
        assert!(svg.contains("calls: 6"));
    }
}
