//! Pre-copy: a process moves in running rounds and a frozen one. The first running round
//! sends every page while the process runs on (see `track` for how its writes are caught);
//! each later one the pages written since the one before, until the policy (`converge`) says
//! to freeze. The final round, frozen, sends the header and only what changed since. Both
//! ends agree on what the running rounds left usable by the same rule, [`kept_parts`],
//! applied to the areas the first round announced and those of the moment: nothing about it
//! travels but the two lists of areas. Later running rounds send pages only into parts the
//! rule keeps at the time, which the receiver still holds from the first round, so they need
//! no list of their own; the final round settles the areas.

use rmosix_image::Area;

use crate::track::Written;

/// For each area of the final image that is not part of the vdso block, in order: where the
/// part that the first round already holds ends. An area keeps the part it shares with a
/// first-round area of the same start and the same kind (protection, sharing, backing and
/// advice). That covers a heap grown or shrunk by brk. Anything else, and what grew, is new:
/// sent whole. The first round's pages in a kept part stand, except those written since.
/// An area whose advice changed is new because advice cannot always be taken back in place
/// (nothing undoes `MADV_HUGEPAGE` to neither it nor `MADV_NOHUGEPAGE`).
pub fn kept_parts(first: &[Area], now: &[Area]) -> Vec<u64> {
    now.iter()
        .filter(|a| !a.is_vdso_block())
        .map(|area| {
            first
                .iter()
                .find(|f| !f.is_vdso_block() && f.start == area.start && same_kind(f, area))
                .map_or(area.start, |f| f.end.min(area.end))
        })
        .collect()
}

/// The runs the final round sends in the kept part [start, end) of an area: those its scan
/// found, and the ranges the running rounds owe (collected but never sent), clipped to the
/// part. In address order; runs that overlap become one, which holds data if any of them
/// does (reading it frozen then tells which pages are zero).
pub fn with_owed(
    found: Vec<Written>,
    owed: &[(u64, u64)],
    (start, end): (u64, u64),
) -> Vec<Written> {
    let owed = owed.iter().filter_map(|&(s, e)| {
        let (s, e) = (s.max(start), e.min(end));
        (s < e).then_some(Written {
            start: s,
            end: e,
            holds_data: true,
        })
    });
    let mut runs: Vec<Written> = found.into_iter().chain(owed).collect();
    runs.sort_by_key(|r| r.start);
    let mut merged: Vec<Written> = Vec::with_capacity(runs.len());
    for run in runs {
        match merged.last_mut() {
            Some(last) if run.start < last.end => {
                last.end = last.end.max(run.end);
                last.holds_data |= run.holds_data;
            }
            _ => merged.push(run),
        }
    }
    merged
}

/// The same mapping but for its end.
fn same_kind(a: &Area, b: &Area) -> bool {
    (a.read, a.write, a.exec, a.shared, a.offset, a.inode)
        == (b.read, b.write, b.exec, b.shared, b.offset, b.inode)
        && a.name == b.name
        && a.advice == b.advice
}

/// The vdso block areas of a list, which must not move between the rounds.
pub fn vdso_block(areas: &[Area]) -> Vec<&Area> {
    areas.iter().filter(|a| a.is_vdso_block()).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use rmosix_image::Advice;

    use super::*;

    /// A private anonymous or named area, readable, for tests.
    pub(crate) fn area(start: u64, end: u64, write: bool, name: &str) -> Area {
        Area {
            start,
            end,
            read: true,
            write,
            exec: false,
            shared: false,
            offset: 0,
            inode: 0,
            name: name.to_owned(),
            advice: Vec::new(),
            guards: Vec::new(),
            file: None,
        }
    }

    #[test]
    fn areas_keep_what_they_share_with_a_first_round_area_of_the_same_start_and_kind() {
        let first = [
            area(0x1000, 0x5000, true, "[heap]"),
            area(0x10000, 0x20000, true, ""),
            area(0x30000, 0x40000, true, ""),
            area(0x50000, 0x60000, true, ""),
            area(0x70000, 0x71000, false, "[vdso]"),
        ];
        let now = [
            // brk grew the heap: the first 4 pages stand, the rest is new.
            area(0x1000, 0x9000, true, "[heap]"),
            // Shrunk.
            area(0x10000, 0x18000, true, ""),
            // mprotect made it read-only: new.
            area(0x30000, 0x40000, false, ""),
            // Given MADV_DONTDUMP: new.
            Area {
                advice: vec![Advice::DontDump],
                ..area(0x50000, 0x60000, true, "")
            },
            // Mapped since.
            area(0x80000, 0x90000, true, ""),
            area(0x70000, 0x71000, false, "[vdso]"),
        ];
        assert_eq!(
            kept_parts(&first, &now),
            [0x5000, 0x18000, 0x30000, 0x50000, 0x80000]
        );
    }

    fn run(start: u64, end: u64, holds_data: bool) -> Written {
        Written {
            start,
            end,
            holds_data,
        }
    }

    #[test]
    fn owed_ranges_join_the_runs_found_within_the_kept_part() {
        let found = vec![
            run(0x1000, 0x3000, true),
            run(0x5000, 0x6000, false),
            run(0x9000, 0xa000, true),
        ];
        let owed = [
            // Overlaps a zapped run: read it, zeros are found as zeros.
            (0x5800, 0x7000),
            // Beside a run found, not over it: stays apart.
            (0x3000, 0x4000),
            // Outside the part, or partly.
            (0x0, 0x800),
            (0xb000, 0x20000),
        ];
        assert_eq!(
            with_owed(found, &owed, (0x1000, 0xc000)),
            [
                run(0x1000, 0x3000, true),
                run(0x3000, 0x4000, true),
                run(0x5000, 0x7000, true),
                run(0x9000, 0xa000, true),
                run(0xb000, 0xc000, true),
            ]
        );
        assert_eq!(with_owed(Vec::new(), &[], (0x1000, 0x2000)), []);
    }
}
