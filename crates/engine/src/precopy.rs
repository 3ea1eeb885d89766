//! Pre-copy: a process moves in two rounds. The first sends every page while the process
//! runs on at home (see `track` for how its writes are caught). The second, frozen, sends the
//! header and only what changed since. Both ends agree on what the first round left usable
//! by the same rule, [`kept_parts`], applied to the areas of each round: nothing about it
//! travels but the two lists of areas.

use rmosix_image::Area;

/// For each area of the final image that is not part of the vdso block, in order: where the
/// part that the first round already holds ends. An area keeps the part it shares with a
/// first-round area of the same start and the same kind (protection, sharing and backing).
/// That covers a heap grown or shrunk by brk. Anything else, and what grew, is new: sent
/// whole. The first round's pages in a kept part stand, except those written since.
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

/// The same mapping but for its end.
fn same_kind(a: &Area, b: &Area) -> bool {
    (a.read, a.write, a.exec, a.shared, a.offset, a.inode)
        == (b.read, b.write, b.exec, b.shared, b.offset, b.inode)
        && a.name == b.name
}

/// The vdso block areas of a list, which must not move between the rounds.
pub fn vdso_block(areas: &[Area]) -> Vec<&Area> {
    areas.iter().filter(|a| a.is_vdso_block()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(start: u64, end: u64, write: bool, name: &str) -> Area {
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
            // Mapped since.
            area(0x80000, 0x90000, true, ""),
            area(0x70000, 0x71000, false, "[vdso]"),
        ];
        assert_eq!(
            kept_parts(&first, &now),
            [0x5000, 0x18000, 0x30000, 0x80000]
        );
    }
}
