//! Draws `docs/scale.svg` from the measurements `benches/scale.rs` writes: nanoseconds per wait
//! against concurrent tasks, tasks on a logarithmic axis, one line per variant and workload
//! (solid: shallow, dashed: deep), each point the median of that cell's measurements.
//!
//! ```sh
//! cargo bench --bench scale                       # writes target/scale.csv
//! cargo run --example scale_chart                 # reads it, writes docs/scale.svg
//! cargo run --example scale_chart -- IN.csv OUT.svg "a caption line"
//! ```
//!
//! The SVG is written by hand: a chart of a few lines needs no plotting library, and the text
//! stays small and readable in a diff.

use std::collections::BTreeMap;
use std::fmt::Write as _;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// Variants in the order the benchmark prints them, each with its colour.
const VARIANTS: [(&str, &str); 4] = [
    ("native", "#555555"),
    ("awaitlet", "#d62728"),
    ("corosensei", "#1f77b4"),
    ("stackful", "#2ca02c"),
];

const WORKLOADS: [(&str, &str); 2] = [("shallow", ""), ("deep", "6,4")];

/// Medians by (workload, variant), then by task count.
type Series = BTreeMap<(String, String), BTreeMap<u64, f64>>;

fn read_series(csv: &str) -> Series {
    let mut values: BTreeMap<(String, String), BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("a header line").split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|&field| field == name)
            .unwrap_or_else(|| panic!("no column {name:?} in {header:?}"))
    };
    let (workload, tasks, variant, nanoseconds) = (
        column("workload"),
        column("tasks"),
        column("variant"),
        column("ns_per_wait"),
    );
    for line in lines.filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let key = (fields[workload].to_owned(), fields[variant].to_owned());
        let count: u64 = fields[tasks].parse().expect("a task count");
        let value: f64 = fields[nanoseconds].parse().expect("nanoseconds");
        values
            .entry(key)
            .or_default()
            .entry(count)
            .or_default()
            .push(value);
    }
    values
        .into_iter()
        .map(|(key, cells)| {
            let medians = cells
                .into_iter()
                .map(|(count, mut runs)| {
                    runs.sort_by(f64::total_cmp);
                    let middle = runs.len() / 2;
                    let median = if runs.len() % 2 == 1 {
                        runs[middle]
                    } else {
                        (runs[middle - 1] + runs[middle]) / 2.0
                    };
                    (count, median)
                })
                .collect();
            (key, medians)
        })
        .collect()
}

/// A round step for about five grid lines up to `maximum`.
fn grid_step(maximum: f64) -> f64 {
    let rough = maximum / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|factor| factor * magnitude)
        .find(|&step| step >= rough)
        .unwrap_or(10.0 * magnitude)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn draw(series: &Series, caption: &str) -> String {
    let counts: Vec<u64> = series
        .values()
        .flat_map(|cells| cells.keys().copied())
        .collect();
    let highest_count = counts.iter().copied().max().unwrap_or(10).max(10);
    let decades = (highest_count as f64).log10().ceil();
    let highest_value = series
        .values()
        .flat_map(|cells| cells.values().copied())
        .fold(0.0, f64::max);
    let step = grid_step(highest_value.max(1.0));
    let top_value = (highest_value / step).ceil() * step;

    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x = |count: u64| LEFT + (count as f64).log10() / decades * plot_width;
    let y = |value: f64| TOP + plot_height - value / top_value * plot_height;

    let mut svg = String::new();
    writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    )
    .unwrap();
    writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#).unwrap();
    writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">One wait on tokio::task::yield_now() at many concurrent tasks</text>"#,
        WIDTH / 2.0
    )
    .unwrap();
    if !caption.is_empty() {
        writeln!(
            svg,
            r##"<text x="{}" y="39" fill="#555" text-anchor="middle">{}</text>"##,
            WIDTH / 2.0,
            escape(caption)
        )
        .unwrap();
    }

    // Grid and axes.
    let mut value = 0.0;
    while value <= top_value + step / 2.0 {
        let position = y(value);
        writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{position:.1}" x2="{:.1}" y2="{position:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{value}</text>"##,
            LEFT + plot_width,
            LEFT - 6.0,
            position + 4.0
        )
        .unwrap();
        value += step;
    }
    for decade in 0..=decades as u32 {
        let count = 10u64.pow(decade);
        let position = x(count);
        let label = match count {
            1 => "1".to_owned(),
            10 => "10".to_owned(),
            100 => "100".to_owned(),
            _ => format!("1e{decade}"),
        };
        writeln!(
            svg,
            r##"<line x1="{position:.1}" y1="{TOP}" x2="{position:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{position:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_height,
            TOP + plot_height + 18.0
        )
        .unwrap();
    }
    writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_width}" height="{plot_height}" fill="none" stroke="#888"/>"##
    )
    .unwrap();
    writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">concurrent tasks (log scale)</text>"#,
        LEFT + plot_width / 2.0,
        HEIGHT - 18.0
    )
    .unwrap();
    writeln!(
        svg,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">ns per wait (median)</text>"#,
        TOP + plot_height / 2.0
    )
    .unwrap();

    // One line per series, then the legend.
    let mut legend_row = 0;
    for (workload, dashes) in WORKLOADS {
        for (variant, colour) in VARIANTS {
            let Some(cells) = series.get(&(workload.to_owned(), variant.to_owned())) else {
                continue;
            };
            let points: Vec<String> = cells
                .iter()
                .map(|(&count, &value)| format!("{:.1},{:.1}", x(count), y(value)))
                .collect();
            writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dashes}"/>"#,
                points.join(" ")
            )
            .unwrap();
            for (&count, &value) in cells {
                writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{workload} {variant}, {count} tasks: {value:.1} ns</title></circle>"#,
                    x(count),
                    y(value)
                )
                .unwrap();
            }
            let legend_y = TOP + 10.0 + legend_row as f64 * 20.0;
            let legend_x = LEFT + plot_width + 14.0;
            writeln!(
                svg,
                r#"<line x1="{legend_x}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{colour}" stroke-width="2" stroke-dasharray="{dashes}"/><text x="{}" y="{:.1}">{variant} ({workload})</text>"#,
                legend_x + 26.0,
                legend_x + 32.0,
                legend_y + 4.0
            )
            .unwrap();
            legend_row += 1;
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn main() {
    let mut arguments = std::env::args().skip(1);
    let input = arguments
        .next()
        .unwrap_or_else(|| "target/scale.csv".to_owned());
    let output = arguments
        .next()
        .unwrap_or_else(|| "docs/scale.svg".to_owned());
    let caption = arguments.next().unwrap_or_default();
    let csv = std::fs::read_to_string(&input)
        .unwrap_or_else(|error| panic!("{input}: {error} (run `cargo bench --bench scale` first)"));
    let series = read_series(&csv);
    assert!(!series.is_empty(), "{input} holds no measurements");
    std::fs::write(&output, draw(&series, &caption))
        .unwrap_or_else(|error| panic!("{output}: {error}"));
    println!("wrote {output}");
}
