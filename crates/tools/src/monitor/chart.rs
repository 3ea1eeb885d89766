//! Painting a [`Monitor`] into a buffer: a pure function of the monitor and the area.
//!
//! ```text
//! mosmon: node 1's view, load (100 = one busy ...)          ← nodes 2-39 of 60, 1 dead hidden (d) →
//! keys: l load  m memory  s speed  u utilisation  t totals  d dead nodes ...     (h, ?)
//! totals: 3 of 60 nodes up, 6 CPUs, load 245, memory 1500 of 6000 MB used        (t)
//! 300│   ██
//!    │   ██
//! 150│   ██ ▂▂       D
//!    │▄▄ ██ ██       E
//!    │██ ██ ██       A
//!   0│██ ██ ██ ▁▁    D
//!      2  3  4  5  6  7 ...
//! ```
//!
//! One column per node, as wide as the widest node number of the map plus a space (at least
//! two cells of bar), so that the numbers along the bottom never collide. The scale is the
//! same for every node of the map, shown or not, so scrolling does not rescale the bars.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Widget, Wrap};

use rmosix_wire::{Liveness, NodeFigures, NodeStatus};

use super::screen::{Feed, Monitor, View};

/// The memory views count in MiB, as `mosctl status` does (MOSIX called them MB).
const MB: u64 = 1 << 20;
/// The bar's top cell when it is partly filled, by eighths (none, then 1/8 to 7/8).
const EIGHTHS: [&str; 8] = [" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇"];
/// A full cell of bar.
const FULL: &str = "█";
/// Free memory above the used part of a memory bar, as MOSIX drew it.
const FREE: &str = "+";
/// What a dead node's column shows instead of a bar, top to bottom.
const DEAD: &str = "DEAD";
/// The line of keys (`h`, `?`).
const HELP: &str = "keys: l load  m memory  s speed  u utilisation  t totals  d dead nodes  \
                    ←/→ PgUp/PgDn Home/End scroll  h help  q quit";

/// How many bars fit across `width` cells: the step of PageUp and PageDown. At least one.
pub fn page(m: &Monitor, width: u16) -> usize {
    let (axis, column) = (axis_width(m), column_width(m));
    (usize::from(width.saturating_sub(axis)) / usize::from(column)).max(1)
}

/// Paint `m` into `area` of `buf`, writing nowhere else.
pub fn draw(m: &Monitor, area: Rect, buf: &mut Buffer) {
    let mut canvas = Canvas { buf, area };
    let mut y = area.y;
    let mut line = |canvas: &mut Canvas, text: &str, style: Style| {
        canvas.text(area.x, y, text, style);
        y = y.saturating_add(1);
    };
    line(
        &mut canvas,
        &title(m),
        Style::new().add_modifier(Modifier::BOLD),
    );
    if let Some(range) = range(m, page(m, area.width)) {
        // The range goes at the right end, over the title's tail if the window is narrow.
        let width = u16::try_from(range.chars().count()).unwrap_or(u16::MAX);
        let x = area.right().saturating_sub(width).max(area.x);
        let style = Style::new().add_modifier(Modifier::REVERSED);
        canvas.text(x, area.y, &range, style);
    }
    if m.help {
        line(&mut canvas, HELP, Style::new().fg(Color::Cyan));
    }
    let (own, nodes) = match &m.feed {
        Feed::Status { node, nodes } => (*node, nodes),
        Feed::Waiting => {
            line(
                &mut canvas,
                "waiting for mosixd's first answer...",
                Style::new(),
            );
            return;
        }
        Feed::Unreachable(why) => {
            let y = y.min(area.bottom());
            let rest = Rect::new(area.x, y, area.width, area.bottom() - y);
            let red = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
            let text = vec![
                Line::styled(why.as_str(), red),
                Line::raw("retrying every second; q quits"),
            ];
            Paragraph::new(text)
                .wrap(Wrap { trim: false })
                .render(rest, canvas.buf);
            return;
        }
    };
    if m.totals {
        line(&mut canvas, &totals(nodes), Style::new().fg(Color::Yellow));
    }
    let below = if m.view == View::Speed { 2 } else { 1 };
    let height = area.bottom().saturating_sub(y).saturating_sub(below);
    if height == 0 {
        return;
    }
    let chart = Rect::new(area.x, y, area.width, height);
    let (axis, column) = (axis_width(m), column_width(m));
    let scale = scale(m);
    draw_axis(&mut canvas, chart, axis, scale);
    let bar = column - 1;
    let page = page(m, area.width);
    let labels = chart.bottom();
    for (i, node) in m
        .shown()
        .into_iter()
        .skip(m.first(page))
        .take(page)
        .enumerate()
    {
        let offset = u16::try_from(i).unwrap_or(u16::MAX).saturating_mul(column);
        let x = area.x.saturating_add(axis).saturating_add(offset);
        if x.saturating_add(bar) > area.right() {
            break;
        }
        draw_column(
            &mut canvas,
            m.view,
            node,
            scale,
            Rect::new(x, chart.y, bar, height),
        );
        let mut label = Style::new();
        match node.liveness {
            Liveness::Up => {}
            Liveness::Suspect => label = label.fg(Color::Yellow),
            Liveness::Dead => label = label.fg(Color::Red),
        }
        if node.node == own {
            label = label.add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
        }
        canvas.right_aligned(x, labels, bar, &node.node.to_string(), label);
        if m.view == View::Speed
            && let Some(f) = &node.figures
            && node.liveness != Liveness::Dead
        {
            let text = cpus(f.milli_cpus, usize::from(bar));
            canvas.right_aligned(x, labels + 1, bar, &text, Style::new());
        }
    }
    if m.view == View::Speed && axis > 4 {
        canvas.right_aligned(area.x, labels + 1, axis - 1, "CPUs", Style::new());
    }
}

/// A buffer that takes writes within one area only, cutting what would stick out.
struct Canvas<'b> {
    buf: &'b mut Buffer,
    area: Rect,
}

impl Canvas<'_> {
    /// Write `text` from (`x`, `y`) on, as much of it as fits in the area.
    fn text(&mut self, x: u16, y: u16, text: &str, style: Style) {
        if (self.area.top()..self.area.bottom()).contains(&y)
            && (self.area.left()..self.area.right()).contains(&x)
        {
            let room = usize::from(self.area.right() - x);
            self.buf.set_stringn(x, y, text, room, style);
        }
    }

    /// Write `text` right-aligned in the `width` cells from `x`, cutting its start if it is
    /// longer.
    fn right_aligned(&mut self, x: u16, y: u16, width: u16, text: &str, style: Style) {
        let len = text.chars().count();
        let skip = len.saturating_sub(usize::from(width));
        let shown: String = text.chars().skip(skip).collect();
        let pad = width - u16::try_from(len - skip).unwrap_or(width);
        self.text(x + pad, y, &shown, style);
    }
}

/// The first line: the view, and whose view of the cluster it is.
fn title(m: &Monitor) -> String {
    let what = match m.view {
        View::Load => "load (100 = one busy process on a standard CPU)",
        View::Memory => "memory, MB (used solid, free + up to the total)",
        View::Speed => "speed (10000 = a standard CPU), CPUs below",
        View::Utilisation => "utilisation, %",
    };
    let help = if m.help { "" } else { "   h: help" };
    match &m.feed {
        Feed::Status { node, .. } => format!("mosmon: node {node}'s view, {what}{help}"),
        _ => format!("mosmon: {what}{help}"),
    }
}

/// Which nodes the screen shows, `page` of them fitting: `← nodes 2-38 of 60 →`, the
/// arrows saying there is more that way; also how many dead nodes are left out.
fn range(m: &Monitor, page: usize) -> Option<String> {
    let Feed::Status { nodes, .. } = &m.feed else {
        return None;
    };
    let shown = m.shown();
    let hidden = nodes.len() - shown.len();
    let mut text = String::new();
    let first = m.first(page);
    let end = (first + page).min(shown.len());
    if first > 0 {
        text.push_str("← ");
    }
    match &shown[first..end] {
        [] => text.push_str("no node"),
        [one] => text.push_str(&format!("node {}", one.node)),
        [a, .., b] => text.push_str(&format!("nodes {}-{}", a.node, b.node)),
    }
    text.push_str(&format!(" of {}", nodes.len()));
    if hidden > 0 {
        text.push_str(&format!(", {hidden} dead hidden (d)"));
    }
    if end < shown.len() {
        text.push_str(" →");
    }
    Some(text)
}

/// The totals line over the whole map, shown or not: nodes up (suspect ones among them),
/// their CPUs, load and memory.
fn totals(nodes: &[NodeStatus]) -> String {
    let alive: Vec<&NodeStatus> = nodes
        .iter()
        .filter(|n| n.liveness != Liveness::Dead)
        .collect();
    let suspect = alive
        .iter()
        .filter(|n| n.liveness == Liveness::Suspect)
        .count();
    let figures: Vec<&NodeFigures> = alive.iter().filter_map(|n| n.figures.as_ref()).collect();
    let milli_cpus: u64 = figures.iter().map(|f| u64::from(f.milli_cpus)).sum();
    let load: u64 = figures.iter().map(|f| u64::from(f.load)).sum();
    let total: u64 = figures.iter().map(|f| f.mem_total).sum();
    let free: u64 = figures.iter().map(|f| f.mem_free.min(f.mem_total)).sum();
    let suspect = if suspect > 0 {
        format!(" ({suspect} suspect)")
    } else {
        String::new()
    };
    format!(
        "totals: {} of {} nodes up{suspect}, {} CPUs, load {load}, memory {} of {} MB used",
        alive.len(),
        nodes.len(),
        cpus(u32::try_from(milli_cpus).unwrap_or(u32::MAX), usize::MAX),
        (total - free) / MB,
        total / MB,
    )
}

/// The scale's labels (top, middle, bottom) and the line beside the bars.
fn draw_axis(canvas: &mut Canvas, chart: Rect, axis: u16, scale: u64) {
    let line = Style::new().fg(Color::DarkGray);
    for y in chart.top()..chart.bottom() {
        canvas.text(chart.x + axis - 1, y, "│", line);
    }
    let mut labels = vec![(chart.top(), scale), (chart.bottom() - 1, 0)];
    if chart.height >= 5 {
        labels.push((chart.top() + chart.height / 2, scale / 2));
    }
    for (y, value) in labels {
        canvas.right_aligned(chart.x, y, axis - 1, &value.to_string(), Style::new());
    }
}

/// One node's column: its bar, or `DEAD`, or `?` for a live node without figures yet.
fn draw_column(canvas: &mut Canvas, view: View, node: &NodeStatus, scale: u64, column: Rect) {
    let bottom = column.bottom() - 1;
    let right = column.right() - 1;
    let figures = match (&node.figures, node.liveness) {
        (_, Liveness::Dead) => {
            let style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
            let top = column.bottom().saturating_sub(4).max(column.y);
            for (y, letter) in (top..column.bottom()).zip(DEAD.chars()) {
                canvas.text(right, y, &letter.to_string(), style);
            }
            return;
        }
        (None, _) => {
            canvas.text(right, bottom, "?", Style::new().fg(Color::Yellow));
            return;
        }
        (Some(f), _) => f,
    };
    let colour = match (node.liveness, view) {
        (Liveness::Suspect, _) => Color::Yellow,
        (_, View::Load) => Color::Green,
        (_, View::Memory) => Color::Cyan,
        (_, View::Speed) => Color::Blue,
        (_, View::Utilisation) => Color::Magenta,
    };
    let rows = u64::from(column.height);
    // In eighths of a cell, so that the top cell shows how full it is.
    let eighths = |value: u64| (value.saturating_mul(rows * 8) + scale / 2) / scale.max(1);
    let (solid, free) = match view {
        View::Memory => {
            let total = figures.mem_total / MB;
            let used = total - figures.mem_free.min(figures.mem_total) / MB;
            (eighths(used), eighths(total).div_ceil(8))
        }
        _ => (eighths(value(view, figures)), 0),
    };
    let solid = solid.min(rows * 8);
    let free = free.min(rows);
    let full = solid / 8;
    for row in 0..rows {
        let (symbol, style) = if row < full {
            (FULL, Style::new().fg(colour))
        } else if row == full && solid % 8 > 0 {
            (EIGHTHS[(solid % 8) as usize], Style::new().fg(colour))
        } else if row < free {
            (FREE, Style::new().fg(Color::DarkGray))
        } else {
            continue;
        };
        let y = bottom - u16::try_from(row).unwrap_or(0);
        canvas.text(
            column.x,
            y,
            &symbol.repeat(usize::from(column.width)),
            style,
        );
    }
}

/// What a bar measures in `view`; for memory, the total (the bar's full height).
fn value(view: View, f: &NodeFigures) -> u64 {
    match view {
        View::Load => u64::from(f.load),
        View::Memory => f.mem_total / MB,
        View::Speed => u64::from(f.speed),
        View::Utilisation => u64::from(f.utilisation_pct),
    }
}

/// The value at the top of the chart: a round number at or above the largest value of any
/// live node of the map, and at least one busy standard CPU for the load, a standard CPU for
/// the speed; utilisation goes to 100%.
fn scale(m: &Monitor) -> u64 {
    let Feed::Status { nodes, .. } = &m.feed else {
        return 1;
    };
    let largest = nodes
        .iter()
        .filter(|n| n.liveness != Liveness::Dead)
        .filter_map(|n| n.figures.as_ref())
        .map(|f| value(m.view, f))
        .max()
        .unwrap_or(0);
    match m.view {
        View::Load => round_up(largest.max(100)),
        View::Memory => round_up(largest.max(1)),
        View::Speed => round_up(largest.max(10000)),
        View::Utilisation => 100,
    }
}

/// The smallest of 1, 2, 3, 4, 5, 6, 8 times a power of ten at or above `v`.
fn round_up(v: u64) -> u64 {
    let mut power: u64 = 1;
    loop {
        for step in [1, 2, 3, 4, 5, 6, 8] {
            let round = step * power;
            if round >= v {
                return round;
            }
        }
        match power.checked_mul(10) {
            Some(next) if next.checked_mul(10).is_some() => power = next,
            _ => return v,
        }
    }
}

/// Cells left of the bars: the widest scale label and the axis line.
fn axis_width(m: &Monitor) -> u16 {
    u16::try_from(scale(m).to_string().len()).unwrap_or(1) + 1
}

/// Cells per node: its bar, at least two cells and as wide as the widest node number of the
/// map, and a space.
fn column_width(m: &Monitor) -> u16 {
    let widest = match &m.feed {
        Feed::Status { nodes, .. } => nodes.iter().map(|n| n.node).max().unwrap_or(1),
        _ => 1,
    };
    u16::try_from(widest.to_string().len()).unwrap_or(5).max(2) + 1
}

/// Thousandths of CPUs in at most `width` characters: `2`, `1.5`, `0.25`, else shorter
/// (`.25`, `.3`), else rounded to whole CPUs.
fn cpus(milli: u32, width: usize) -> String {
    let trim = |s: String| s.trim_end_matches('0').trim_end_matches('.').to_owned();
    let exact = trim(format!("{}.{:03}", milli / 1000, milli % 1000));
    let tenths = (milli + 50) / 100;
    let one_decimal = trim(format!("{}.{}", tenths / 10, tenths % 10));
    let candidates = [
        exact.clone(),
        exact.strip_prefix('0').unwrap_or(&exact).to_owned(),
        one_decimal.clone(),
        one_decimal
            .strip_prefix('0')
            .unwrap_or(&one_decimal)
            .to_owned(),
    ];
    candidates
        .into_iter()
        .find(|c| !c.is_empty() && c.len() <= width)
        .unwrap_or_else(|| ((milli + 500) / 1000).to_string())
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use rmosix_wire::NodeModes;

    use super::*;

    fn up(node: u16, load: u32) -> NodeStatus {
        NodeStatus {
            node,
            liveness: Liveness::Up,
            figures: Some(NodeFigures {
                load,
                speed: 10000,
                milli_cpus: 2000,
                mem_total: 1000 * MB,
                mem_free: 750 * MB,
                utilisation_pct: 50,
                modes: NodeModes::default(),
            }),
        }
    }

    fn dead(node: u16) -> NodeStatus {
        NodeStatus {
            node,
            liveness: Liveness::Dead,
            figures: None,
        }
    }

    fn monitor(nodes: Vec<NodeStatus>) -> Monitor {
        let mut m = Monitor::new(View::Load, false, false);
        m.feed = Feed::Status { node: 1, nodes };
        m
    }

    /// The screen `m` paints on a `width` x `height` terminal, line by line.
    fn render(m: &Monitor, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal
            .draw(|frame| draw(m, frame.area(), frame.buffer_mut()))
            .unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect())
            .collect()
    }

    /// The cells of the column at `x`, top to bottom, between the first line and the last.
    fn column(lines: &[String], x: usize) -> String {
        lines
            .iter()
            .map(|l| l.chars().nth(x).unwrap_or(' '))
            .collect()
    }

    /// Where node `id`'s number ends in the line of numbers (the bar's right edge).
    fn label_end(lines: &[String], row: usize, id: u16) -> usize {
        let line: Vec<char> = lines[row].chars().collect();
        let digits: Vec<char> = id.to_string().chars().collect();
        (0..line.len())
            .find(|&x| {
                line[x..].starts_with(&digits)
                    && (x == 0 || line[x - 1] == ' ')
                    && line.get(x + digits.len()).is_none_or(|c| *c == ' ')
            })
            .map(|x| x + digits.len() - 1)
            .unwrap_or_else(|| panic!("no node {id} in {:?}", lines[row]))
    }

    /// The first `n` cells of a line.
    fn head(line: &str, n: usize) -> String {
        line.chars().take(n).collect()
    }

    /// How many cells of a column are bar (solid or partly filled).
    fn bar_cells(column: &str) -> usize {
        column
            .chars()
            .filter(|c| *c == '█' || EIGHTHS[1..].contains(&c.to_string().as_str()))
            .count()
    }

    #[test]
    fn bars_scale_to_the_busiest_node_with_numbers_along_the_bottom() {
        let m = monitor(vec![up(1, 0), up(2, 400), up(3, 200)]);
        let lines = render(&m, 80, 12);
        assert!(
            lines[0].starts_with("mosmon: node 1's view, load ("),
            "{lines:#?}"
        );
        assert!(lines[0].ends_with("nodes 1-3 of 3"), "{lines:#?}");
        // 10 rows of chart, a line of node numbers.
        assert_eq!(lines[11].trim(), "1  2  3");
        assert_eq!(head(&lines[1], 4), "400│");
        assert_eq!(head(&lines[10], 4), "  0│");
        let bars: Vec<usize> = [1, 2, 3]
            .iter()
            .map(|&id| bar_cells(&column(&lines[1..11], label_end(&lines, 11, id))))
            .collect();
        assert_eq!(bars, [0, 10, 5], "{lines:#?}");
        // Each bar is as wide as its column's number cell pair.
        let two = label_end(&lines, 11, 2);
        assert_eq!(bar_cells(&column(&lines[1..11], two - 1)), 10);
        // An idle cluster is drawn against one busy standard CPU.
        let lines = render(&monitor(vec![up(1, 20), up(2, 10)]), 40, 12);
        assert_eq!(head(&lines[1], 4), "100│", "{lines:#?}");
        let one = label_end(&lines, 11, 1);
        assert_eq!(column(&lines[1..11], one).trim(), "██", "{lines:#?}");
    }

    #[test]
    fn a_partly_filled_top_cell_shows_its_eighths() {
        // 10 rows at 100 per 10 rows: 45 is four cells and a half.
        let lines = render(&monitor(vec![up(1, 45), up(2, 100)]), 40, 12);
        let one = column(&lines[1..11], label_end(&lines, 11, 1));
        assert_eq!(one, "     ▄████", "{lines:#?}");
    }

    #[test]
    fn dead_nodes_are_hidden_unless_shown_then_marked_dead() {
        let mut m = monitor(vec![up(1, 100), dead(2), up(3, 100)]);
        let lines = render(&m, 40, 12);
        assert_eq!(lines[11].trim(), "1  3", "{lines:#?}");
        assert!(
            lines[0].ends_with("nodes 1-3 of 3, 1 dead hidden (d)"),
            "{lines:#?}"
        );
        m.dead = true;
        let lines = render(&m, 40, 12);
        assert_eq!(lines[11].trim(), "1  2  3", "{lines:#?}");
        let two = column(&lines[1..11], label_end(&lines, 11, 2));
        assert_eq!(two, "      DEAD", "{lines:#?}");
        assert!(lines[0].ends_with("nodes 1-3 of 3"), "{lines:#?}");
    }

    #[test]
    fn a_map_wider_than_the_screen_scrolls_and_says_what_is_shown() {
        let mut m = monitor((1..=60).map(|n| up(n, u32::from(n) * 10)).collect());
        m.dead = true;
        // Axis "600│" is 4 cells; 3 cells per node: 12 nodes in 40 cells.
        assert_eq!(page(&m, 40), 12);
        let lines = render(&m, 40, 12);
        assert!(lines[0].ends_with("nodes 1-12 of 60 →"), "{lines:#?}");
        assert_eq!(lines[11].trim(), "1  2  3  4  5  6  7  8  9 10 11 12");
        m.press(KeyEvent::new(KeyCode::Right, KeyModifiers::NONE), 12);
        m.press(KeyEvent::new(KeyCode::PageDown, KeyModifiers::NONE), 12);
        let lines = render(&m, 40, 12);
        assert!(lines[0].ends_with("← nodes 14-25 of 60 →"), "{lines:#?}");
        assert_eq!(lines[11].trim(), "14 15 16 17 18 19 20 21 22 23 24 25");
        m.press(KeyEvent::new(KeyCode::End, KeyModifiers::NONE), 12);
        let lines = render(&m, 40, 12);
        assert!(lines[0].ends_with("← nodes 49-60 of 60"), "{lines:#?}");
        // Node 60 has the highest load: a full bar.
        let sixty = column(&lines[1..11], label_end(&lines, 11, 60));
        assert_eq!(bar_cells(&sixty), 10, "{lines:#?}");
        // Wider numbers, wider columns.
        let m = monitor(vec![up(1, 0), up(20002, 0)]);
        let lines = render(&m, 40, 12);
        assert_eq!(lines[11].trim_end(), "        1 20002");
    }

    #[test]
    fn totals_count_live_nodes_cpus_load_and_memory() {
        let mut suspect = up(4, 50);
        suspect.liveness = Liveness::Suspect;
        let mut m = monitor(vec![up(1, 100), dead(2), up(3, 200), suspect]);
        m.totals = true;
        let lines = render(&m, 100, 12);
        assert_eq!(
            lines[1].trim_end(),
            "totals: 3 of 4 nodes up (1 suspect), 6 CPUs, load 350, memory 750 of 3000 MB used"
        );
        // The chart is one row shorter.
        assert_eq!(head(&lines[2], 4), "200│", "{lines:#?}");
    }

    #[test]
    fn memory_shows_used_solid_and_free_up_to_the_total() {
        let mut small = up(2, 0);
        if let Some(f) = &mut small.figures {
            f.mem_total = 500 * MB;
            f.mem_free = 500 * MB;
        }
        let mut m = monitor(vec![up(1, 0), small]);
        m.view = View::Memory;
        let lines = render(&m, 60, 12);
        assert!(lines[0].contains("memory, MB"), "{lines:#?}");
        assert_eq!(head(&lines[1], 5), "1000│", "{lines:#?}");
        // 250 of 1000 MB used: 2.5 cells solid, the rest free up to the top.
        let one = column(&lines[1..11], label_end(&lines, 11, 1));
        assert_eq!(one, "+++++++▄██", "{lines:#?}");
        let two = column(&lines[1..11], label_end(&lines, 11, 2));
        assert_eq!(two, "     +++++", "{lines:#?}");
    }

    #[test]
    fn speed_shows_cpus_under_the_numbers_and_utilisation_goes_to_100() {
        let mut fast = up(2, 0);
        if let Some(f) = &mut fast.figures {
            f.speed = 20000;
            f.milli_cpus = 500;
            f.utilisation_pct = 100;
        }
        let mut m = monitor(vec![up(1, 0), fast]);
        m.view = View::Speed;
        let lines = render(&m, 80, 12);
        assert!(
            lines[0].contains("speed (10000 = a standard CPU)"),
            "{lines:#?}"
        );
        assert_eq!(head(&lines[1], 6), "20000│", "{lines:#?}");
        assert_eq!(lines[10].trim(), "1  2", "{lines:#?}");
        assert_eq!(lines[11].trim(), "CPUs  2 .5", "{lines:#?}");
        let one = column(&lines[1..10], label_end(&lines, 10, 1));
        assert_eq!(bar_cells(&one), 5, "{lines:#?}");
        m.view = View::Utilisation;
        let lines = render(&m, 60, 12);
        assert!(lines[0].contains("utilisation, %"), "{lines:#?}");
        assert_eq!(head(&lines[1], 4), "100│", "{lines:#?}");
        let one = column(&lines[1..11], label_end(&lines, 11, 1));
        let two = column(&lines[1..11], label_end(&lines, 11, 2));
        assert_eq!((bar_cells(&one), bar_cells(&two)), (5, 10), "{lines:#?}");
    }

    #[test]
    fn an_unreachable_daemon_is_said_plainly_and_help_lists_the_keys() {
        let mut m = Monitor::new(View::Load, false, false);
        assert!(render(&m, 60, 5)[1].starts_with("waiting for mosixd"));
        m.feed = Feed::Unreachable("cannot reach mosixd at /run/x.sock".into());
        m.help = true;
        let lines = render(&m, 60, 5);
        assert_eq!(
            lines[0].trim_end(),
            "mosmon: load (100 = one busy process on a standard CPU)"
        );
        assert!(lines[1].starts_with("keys: l load  m memory"), "{lines:#?}");
        assert_eq!(lines[2].trim_end(), "cannot reach mosixd at /run/x.sock");
        assert_eq!(lines[3].trim_end(), "retrying every second; q quits");
    }

    #[test]
    fn tiny_screens_and_offset_areas_are_painted_without_panics() {
        let mut m = monitor((1..=60).map(|n| up(n, 100)).collect());
        m.totals = true;
        m.help = true;
        for view in [View::Load, View::Memory, View::Speed, View::Utilisation] {
            m.view = view;
            for (w, h) in [(1, 1), (3, 2), (5, 4), (8, 6), (200, 3)] {
                render(&m, w, h);
            }
        }
        // Only the area given is painted.
        let mut buf = Buffer::empty(Rect::new(0, 0, 30, 10));
        draw(&m, Rect::new(5, 2, 20, 6), &mut buf);
        for y in 0..10 {
            for x in 0..30 {
                if !(5..25).contains(&x) || !(2..8).contains(&y) {
                    assert_eq!(buf[(x, y)].symbol(), " ", "({x}, {y})");
                }
            }
        }
    }

    #[test]
    fn cpus_fit_their_column() {
        assert_eq!(cpus(2000, 2), "2");
        assert_eq!(cpus(1500, 3), "1.5");
        assert_eq!(cpus(1500, 2), "2");
        assert_eq!(cpus(250, 4), "0.25");
        assert_eq!(cpus(250, 3), ".25");
        assert_eq!(cpus(250, 2), ".3");
        assert_eq!(cpus(12000, 2), "12");
        assert_eq!(round_up(245), 300);
        assert_eq!(round_up(100), 100);
        assert_eq!(round_up(701), 800);
        assert_eq!(round_up(801), 1000);
    }
}
