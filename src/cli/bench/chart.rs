//! The chart: one SVG drawn with plotters (its SVG backend only, so text
//! stays SVG text and no font library is needed). A header with the
//! machine and a legend, then one panel per workload: a horizontal bar per
//! entry that ran — tasks/s on a linear axis for the heavy workload (with
//! the ceiling as a dashed line), wall µs per task on a log axis for the
//! trivial one.

use super::machine::{fmt_probe, Machine};
use super::report::{fmt_rate, fmt_us};
use super::{Entry, Plan, Source, Workload, WorkloadRun};
use gilpool::Mode;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;

/// The whole chart's width; the row labels, the bars and the value labels
/// share it.
const CHART_W: u32 = 1090;
const LABEL_W: u32 = 470;
const VALUE_W: u32 = 170;
const ROW_H: f64 = 22.0;
const BAR_H: f64 = 15.0;
/// Title, subtitle and legend.
const HEADER_H: u32 = 64;
/// A panel's title above its plot, and its tick labels (and the gap to
/// the next panel) below.
const PANEL_TOP: u32 = 38;
const PANEL_BOTTOM: u32 = 24;
const FOOTER_H: u32 = 20;
const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn colour(source: Source) -> RGBColor {
    match source {
        Source::Sequential | Source::Threads => RGBColor(0x9e, 0x9e, 0x9e),
        Source::ProcessPool => RGBColor(0xe6, 0x86, 0x2e),
        Source::Interpreters => RGBColor(0x8e, 0x6c, 0xc0),
        Source::Ceiling => CEILING,
        Source::Gilpool(Mode::SubInterpreters) => RGBColor(0x2e, 0x9e, 0x52),
        Source::Gilpool(_) => RGBColor(0x5f, 0xa8, 0xd3),
    }
}

const CEILING: RGBColor = RGBColor(0x4a, 0x4a, 0x4a);
const GREY_TEXT: RGBColor = RGBColor(0x55, 0x55, 0x55);
const DARK_TEXT: RGBColor = RGBColor(0x22, 0x22, 0x22);
const GRID: RGBColor = RGBColor(0xe3, 0xe3, 0xe3);
const AXIS: RGBColor = RGBColor(0x88, 0x88, 0x88);

/// Text of `px` pixels. plotters' SVG backend writes `font-size` as the
/// given size / 1.24, so the size asked for is scaled up by that.
fn text(px: f64, bold: bool) -> TextStyle<'static> {
    let style = if bold {
        FontStyle::Bold
    } else {
        FontStyle::Normal
    };
    FontDesc::new(FontFamily::Name(FONT), px * 1.24, style).into()
}

/// A linear axis with the given ticks (grid lines and labels), no others.
struct Ticks {
    linear: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for Ticks {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.linear.map(value, limit)
    }
    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }
    fn range(&self) -> Range<f64> {
        self.linear.range()
    }
}

/// One workload's panel: the entries that ran, and its axis.
struct Panel<'r> {
    run: &'r WorkloadRun,
    rows: Vec<&'r Entry>,
    /// Log axis of µs per task (trivial), else linear tasks/s (heavy).
    log: bool,
}

impl<'r> Panel<'r> {
    fn new(run: &'r WorkloadRun) -> Option<Panel<'r>> {
        let rows: Vec<&Entry> = run
            .entries
            .iter()
            .filter(|e| e.seconds().is_some())
            .collect();
        (!rows.is_empty()).then_some(Panel {
            run,
            rows,
            log: run.workload == Workload::Trivial,
        })
    }

    fn plot_h(&self) -> f64 {
        self.rows.len() as f64 * ROW_H + 6.0
    }

    fn height(&self) -> u32 {
        PANEL_TOP + self.plot_h() as u32 + PANEL_BOTTOM
    }

    fn value(&self, e: &Entry) -> f64 {
        if self.log {
            e.us_per_task().unwrap_or(0.0)
        } else {
            e.tasks_per_s().unwrap_or(0.0)
        }
    }

    /// The x axis: its range and ticks, both in axis units (decades on
    /// the log axis).
    fn axis(&self) -> (f64, f64, Vec<f64>) {
        let (lo, hi) = self
            .rows
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), e| {
                (lo.min(self.value(e)), hi.max(self.value(e)))
            });
        if self.log {
            let lo_d = lo.max(1e-3).log10().floor();
            let hi_d = hi.max(lo * 10.0).log10().ceil();
            let ticks = (0..=(hi_d - lo_d) as usize)
                .map(|k| lo_d + k as f64)
                .collect();
            (lo_d, hi_d, ticks)
        } else {
            let step = nice_step(hi);
            let n = (hi / step).ceil().max(1.0) as usize;
            let ticks = (0..=n).map(|k| k as f64 * step).collect();
            (0.0, n as f64 * step, ticks)
        }
    }

    /// A value in axis units.
    fn at(&self, v: f64, lo: f64) -> f64 {
        if self.log {
            v.max(10f64.powf(lo)).log10()
        } else {
            v
        }
    }

    /// The figure beside a bar: µs per task, or tasks/s and the speed-up
    /// over sequential Python.
    fn detail(&self, v: f64) -> String {
        if self.log {
            return format!("{} µs", fmt_us(v));
        }
        match self.run.sequential_tps() {
            Some(s) => format!("{} /s · {:.2}x", fmt_rate(v), v / s),
            None => format!("{} /s", fmt_rate(v)),
        }
    }

    fn title(&self) -> String {
        match self.run.workload {
            Workload::Heavy => format!(
                "heavy: gilpool_workloads.heavy() ~1 ms/task, {} tasks — tasks/s (higher is better)",
                self.run.tasks
            ),
            Workload::Library => format!(
                "library: gilpool_workloads.library() (difflib), {} tasks — tasks/s (higher is better)",
                self.run.tasks
            ),
            Workload::Trivial => format!(
                "trivial: gilpool_workloads.inc(i), {} tasks — wall µs per task, log scale (lower is better)",
                self.run.tasks
            ),
        }
    }

    fn draw(&self, area: &Area<'_>) -> Result<(), String> {
        area.draw(&Text::new(self.title(), (12, 6), text(14.0, true)))
            .map_err(draw_error)?;
        let plot_h = self.plot_h();
        let (lo, hi, ticks) = self.axis();
        let mut chart = ChartBuilder::on(area)
            .margin_top(PANEL_TOP)
            .margin_right(VALUE_W)
            .y_label_area_size(LABEL_W)
            .x_label_area_size(PANEL_BOTTOM)
            .build_cartesian_2d(
                Ticks {
                    linear: (lo..hi).into(),
                    ticks,
                },
                0.0..plot_h,
            )
            .map_err(draw_error)?;
        let log = self.log;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .axis_style(AXIS)
            .set_all_tick_mark_size(0)
            .x_label_style(text(11.0, false).color(&GREY_TEXT))
            .x_label_formatter(&|t| format_tick(if log { 10f64.powf(*t) } else { *t }))
            .draw()
            .map_err(draw_error)?;
        // Rows from the top: the y axis runs 0 (bottom) to plot_h (top).
        let row_top = |i: usize| plot_h - 4.0 - i as f64 * ROW_H;
        let min_w = (hi - lo) / f64::from(CHART_W - LABEL_W - VALUE_W);
        chart
            .draw_series(self.rows.iter().enumerate().map(|(i, e)| {
                let x = self.at(self.value(e), lo).max(lo + min_w);
                Rectangle::new(
                    [(lo, row_top(i)), (x, row_top(i) - BAR_H)],
                    colour(e.source).filled(),
                )
            }))
            .map_err(draw_error)?;
        let ceiling = self.run.ceiling_tps().filter(|_| !self.log);
        if let Some(c) = ceiling {
            chart
                .draw_series(DashedLineSeries::new(
                    [(c, 0.0), (c, plot_h + 2.0)],
                    4,
                    3,
                    CEILING.stroke_width(1),
                ))
                .map_err(draw_error)?;
        }
        // Text beside the plot goes on the panel, in its pixels.
        let (bx, by) = area.get_base_pixel();
        let pixel = |x: f64, y: f64| {
            let (x, y) = chart.backend_coord(&(x, y));
            (x - bx, y - by)
        };
        let (left, _) = pixel(lo, 0.0);
        for (i, e) in self.rows.iter().enumerate() {
            let (_, y) = pixel(lo, row_top(i) - BAR_H / 2.0);
            let label = format!("{}, W={}", e.short_label(), e.workers);
            let bold = matches!(e.source, Source::Gilpool(_));
            let style = text(12.0, bold).pos(Pos::new(HPos::Right, VPos::Center));
            area.draw(&Text::new(label, (left - 8, y), style))
                .map_err(draw_error)?;
        }
        if let Some(c) = ceiling {
            let (x, y) = pixel(c, plot_h);
            let style = text(10.0, false)
                .color(&CEILING)
                .pos(Pos::new(HPos::Center, VPos::Bottom));
            area.draw(&Text::new("ceiling", (x, y - 3), style))
                .map_err(draw_error)?;
        }
        // Value labels last, each on a white ground, over the ceiling line.
        for (i, e) in self.rows.iter().enumerate() {
            let v = self.value(e);
            let detail = self.detail(v);
            let x = self.at(v, lo).max(lo + min_w);
            let (x, y) = pixel(x, row_top(i) - BAR_H / 2.0);
            let style = text(11.0, false)
                .color(&DARK_TEXT)
                .pos(Pos::new(HPos::Left, VPos::Center));
            let (w, _) = area
                .estimate_text_size(&detail, &style)
                .map_err(draw_error)?;
            area.draw(&Rectangle::new(
                [(x + 3, y - 6), (x + 7 + w as i32, y + 6)],
                WHITE.filled(),
            ))
            .map_err(draw_error)?;
            area.draw(&Text::new(detail, (x + 5, y), style))
                .map_err(draw_error)?;
        }
        Ok(())
    }
}

/// Machine line and legend across the top.
fn draw_header(area: &Area<'_>, m: &Machine, plan: &Plan) -> Result<(), String> {
    area.draw(&Text::new("gilpool bench", (12, 6), text(16.0, true)))
        .map_err(draw_error)?;
    let subtitle = format!(
        "Python {} · {} CPUs ({}) · {} workers · best of {} rounds · load {} → {} · core probe µs/heavy(): {} → {}",
        m.python,
        m.cpus,
        m.cpu_model,
        plan.workers,
        plan.repeat,
        m.load_before.split(' ').next().unwrap_or("?"),
        m.load_after.split(' ').next().unwrap_or("?"),
        fmt_probe(&m.probe_before),
        fmt_probe(&m.probe_after)
    );
    let small = text(11.0, false);
    area.draw(&Text::new(subtitle, (12, 27), small.color(&GREY_TEXT)))
        .map_err(draw_error)?;
    let legend: [(&str, Source); 6] = [
        (
            "gilpool SubInterpreters",
            Source::Gilpool(Mode::SubInterpreters),
        ),
        ("gilpool SingleGil", Source::Gilpool(Mode::SingleGil)),
        ("process pools", Source::ProcessPool),
        ("stdlib interpreters", Source::Interpreters),
        ("sequential / threads", Source::Sequential),
        ("N-process ceiling", Source::Ceiling),
    ];
    let mut x = 12;
    for (name, source) in legend {
        area.draw(&Rectangle::new(
            [(x, 46), (x + 11, 57)],
            colour(source).filled(),
        ))
        .map_err(draw_error)?;
        let style = small.pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(name, (x + 15, 52), style))
            .map_err(draw_error)?;
        x += 22 + (6.3 * name.chars().count() as f64) as i32;
    }
    Ok(())
}

/// The chart of every workload that has a row, as an SVG document.
pub(super) fn svg(runs: &[WorkloadRun], m: &Machine, plan: &Plan) -> Result<String, String> {
    let panels: Vec<Panel<'_>> = runs.iter().filter_map(Panel::new).collect();
    let height = HEADER_H + panels.iter().map(Panel::height).sum::<u32>() + FOOTER_H;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (CHART_W, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (header, mut rest) = root.split_vertically(HEADER_H);
        draw_header(&header, m, plan)?;
        for panel in &panels {
            let (area, below) = rest.split_vertically(panel.height());
            panel.draw(&area)?;
            rest = below;
        }
        root.present().map_err(draw_error)?;
    }
    Ok(out)
}

/// One line of a line chart: a value per worker count.
#[derive(Debug)]
pub(super) struct Line {
    pub(super) label: String,
    /// Against a process pool (orange), else against the ceiling (grey).
    pub(super) pool: bool,
    pub(super) dashed: bool,
    pub(super) points: Vec<(usize, f64)>,
}

/// A line chart of ratios against worker counts (a log2 axis with a tick
/// at each count), with the 0.9 target and parity as dashed guides.
pub(super) fn lines_svg(title: &str, subtitle: &str, lines: &[Line]) -> Result<String, String> {
    let mut counts: Vec<usize> = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .collect();
    counts.sort_unstable();
    counts.dedup();
    let x = |n: usize| (n.max(1) as f64).log2();
    let (x_lo, x_hi) = match (counts.first(), counts.last()) {
        (Some(&a), Some(&b)) => (x(a) - 0.3, x(b) + 0.3),
        _ => (-0.3, 0.3),
    };
    let top = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(1.2f64, f64::max)
        * 1.1;
    let step = nice_step(top);
    let y_ticks: Vec<f64> = (0..)
        .map(|i| f64::from(i) * step)
        .take_while(|v| *v <= top)
        .collect();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (CHART_W, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (header, area) = root.split_vertically(HEADER_H);
        header
            .draw(&Text::new(title.to_string(), (12, 6), text(16.0, true)))
            .map_err(draw_error)?;
        header
            .draw(&Text::new(
                subtitle.to_string(),
                (12, 27),
                text(11.0, false).color(&GREY_TEXT),
            ))
            .map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&area)
            .margin(20)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(
                Ticks {
                    linear: (x_lo..x_hi).into(),
                    ticks: counts.iter().map(|&n| x(n)).collect(),
                },
                Ticks {
                    linear: (0.0..top).into(),
                    ticks: y_ticks,
                },
            )
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .axis_style(AXIS)
            .x_desc("workers N")
            .y_desc("peer s ÷ gilpool s")
            .x_label_style(text(11.0, false).color(&GREY_TEXT))
            .y_label_style(text(11.0, false).color(&GREY_TEXT))
            .x_label_formatter(&|t| format!("{}", t.exp2().round()))
            .y_label_formatter(&|t| format!("{t:.1}"))
            .draw()
            .map_err(draw_error)?;
        for (level, what, v) in [
            (1.0, "parity", VPos::Bottom),
            (0.9, "0.9 target", VPos::Top),
        ] {
            chart
                .draw_series(DashedLineSeries::new(
                    [(x_lo, level), (x_hi, level)],
                    4,
                    3,
                    AXIS.stroke_width(1),
                ))
                .map_err(draw_error)?;
            chart
                .draw_series([Text::new(
                    what,
                    (x_hi - 0.25, level),
                    text(10.0, false)
                        .color(&GREY_TEXT)
                        .pos(Pos::new(HPos::Left, v)),
                )])
                .map_err(draw_error)?;
        }
        let mut legend_x = 12;
        for line in lines {
            let colour = if line.pool {
                colour(Source::ProcessPool)
            } else {
                colour(Source::Gilpool(Mode::SubInterpreters))
            };
            let pts: Vec<(f64, f64)> = line.points.iter().map(|&(n, v)| (x(n), v)).collect();
            let style = colour.stroke_width(2);
            // The legend, in the header as in the bar chart.
            let key = [(legend_x, 52), (legend_x + 22, 52)];
            if line.dashed {
                header
                    .draw(&DashedPathElement::new(key, 5, 3, style))
                    .map_err(draw_error)?;
                chart
                    .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))
                    .map_err(draw_error)?;
            } else {
                header
                    .draw(&PathElement::new(key, style))
                    .map_err(draw_error)?;
                chart
                    .draw_series(LineSeries::new(pts.clone(), style))
                    .map_err(draw_error)?;
            }
            let label = text(11.0, false).pos(Pos::new(HPos::Left, VPos::Center));
            header
                .draw(&Text::new(line.label.clone(), (legend_x + 27, 52), label))
                .map_err(draw_error)?;
            legend_x += 40 + (6.3 * line.label.chars().count() as f64) as i32;
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(draw_error)?;
        }
        root.present().map_err(draw_error)?;
    }
    Ok(out)
}

fn draw_error(e: impl std::fmt::Display) -> String {
    format!("cannot draw the chart: {e}")
}

/// A round step near `span / 5` (1, 2 or 5 times a power of ten).
fn nice_step(span: f64) -> f64 {
    let raw = (span / 5.0).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|k| k * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn format_tick(v: f64) -> String {
    if v <= 0.0 {
        "0".into()
    } else if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else if v >= 1.0 {
        format!("{v}")
    } else {
        let digits = ((-v.log10()).ceil() as usize).min(9);
        format!("{v:.digits$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bench::Outcome;

    fn entry(key: &str, source: Source, workers: usize, seconds: f64) -> Entry {
        Entry {
            key: key.into(),
            label: key.into(),
            grouping: String::new(),
            source,
            workers,
            tasks: 1000,
            outcome: Outcome::Ran {
                seconds,
                seconds_all: vec![seconds],
                startup_s: None,
                verified: true,
            },
        }
    }

    fn run(workload: Workload) -> WorkloadRun {
        WorkloadRun {
            workload,
            tasks: 1000,
            entries: vec![
                entry("sequential", Source::Sequential, 1, 1.0),
                entry("ceiling", Source::Ceiling, 2, 0.5),
                entry("ours", Source::Gilpool(Mode::SubInterpreters), 2, 0.52),
                Entry {
                    outcome: Outcome::Skipped("not here".into()),
                    ..entry("skipped", Source::Interpreters, 2, 0.0)
                },
            ],
            paired: Vec::new(),
            baselines: None,
        }
    }

    #[test]
    fn draws_a_panel_per_workload_with_its_rows() {
        let plan = Plan {
            allocator: gilpool::Allocator::Default,
            workers: 2,
            scaling: false,
            repeat: 1,
            paired: 1,
            dir: "python".into(),
            force_progress: false,
        };
        let runs = [run(Workload::Heavy), run(Workload::Trivial)];
        let svg = svg(&runs, &Machine::default(), &plan).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        for text in [
            "heavy: ",
            "trivial: ",
            "ceiling, W=2",
            "ours, W=2",
            "1000 /s · 1.00x",
        ] {
            assert!(svg.contains(text), "no {text:?} in {svg}");
        }
        // The dashed ceiling line is on the heavy panel only.
        assert_eq!(svg.matches(">\nceiling\n<").count(), 1, "{svg}");
        assert!(!svg.contains("skipped, W=2"), "{svg}");
        // Two panels of three rows each under the header.
        let height = HEADER_H + 2 * (PANEL_TOP + (3.0 * ROW_H + 6.0) as u32 + PANEL_BOTTOM);
        assert!(svg.contains(&format!("height=\"{}\"", height + FOOTER_H)));
    }

    #[test]
    fn draws_a_line_per_comparison_with_a_tick_per_worker_count() {
        let line = |label: &str, pool, dashed| Line {
            label: label.into(),
            pool,
            dashed,
            points: vec![(1, 1.02), (2, 0.97), (16, 0.91)],
        };
        let svg = lines_svg(
            "scaling",
            "a subtitle",
            &[
                line("heavy: vs ceiling", false, false),
                line("trivial: vs pool", true, true),
            ],
        )
        .unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        for text in [
            "heavy: vs ceiling",
            "trivial: vs pool",
            ">\n16\n<",
            "0.9 target",
            "a subtitle",
        ] {
            assert!(svg.contains(text), "no {text:?} in {svg}");
        }
        // Three points per line.
        assert_eq!(svg.matches("<circle").count(), 6, "{svg}");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_step(2077.0), 500.0);
        assert_eq!(nice_step(0.9), 0.2);
        assert_eq!(format_tick(0.0), "0");
        assert_eq!(format_tick(1500.0), "1.5k");
        assert_eq!(format_tick(0.01), "0.01");
        assert_eq!(format_tick(100.0), "100");
        assert_eq!(format_tick(2e6), "2M");
    }
}
