//! What a sealed datagram carries (the seal is `seal`'s): one kind byte, then
//!
//! ```text
//! 0 foca      foca's message (see `swim`): probes, announcements, membership news
//! 1 window    count (1) · entries: the sender's own entry first, then the youngest it holds
//! 2 want      count (1) · (node id (2) · profile tag (2))...: profiles asked of the sender
//! 3 profiles  count (1) · (entry · profile)...: what was asked, as the sender holds it now
//! ```
//!
//! An entry and a profile are laid out in `state`. A message fills one datagram at most
//! ([`MAX_PLAIN`] bytes) and holds at most 255 items; a longer answer is cut into several.

use rmosix_config::NodeId;

use crate::seal::MAX_PLAIN;
use crate::state::{Entry, EntryError, Profile, Reader};

const FOCA: u8 = 0;
const WINDOW: u8 = 1;
const WANT: u8 = 2;
const PROFILES: u8 = 3;

/// Room for foca's message in a datagram, after the kind byte.
pub(crate) const FOCA_ROOM: usize = MAX_PLAIN - 1;

/// A message as read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    Foca(&'a [u8]),
    Window(Vec<Entry>),
    Want(Vec<(NodeId, u16)>),
    Profiles(Vec<(Entry, Profile)>),
}

impl Message<'_> {
    pub fn decode(plain: &[u8]) -> Result<Message<'_>, EntryError> {
        let (&kind, body) = plain.split_first().ok_or(EntryError::Short)?;
        if kind == FOCA {
            return Ok(Message::Foca(body));
        }
        let mut reader = Reader::new(body);
        let count = reader.u8()?;
        let message = match kind {
            WINDOW => Message::Window(
                (0..count)
                    .map(|_| Entry::decode(&mut reader))
                    .collect::<Result<_, _>>()?,
            ),
            WANT => Message::Want(
                (0..count)
                    .map(|_| Ok((reader.node()?, reader.u16()?)))
                    .collect::<Result<_, _>>()?,
            ),
            PROFILES => Message::Profiles(
                (0..count)
                    .map(|_| Ok((Entry::decode(&mut reader)?, Profile::decode(&mut reader)?)))
                    .collect::<Result<_, _>>()?,
            ),
            other => return Err(EntryError::Kind(other)),
        };
        reader.finish()?;
        Ok(message)
    }
}

/// foca's `message` behind its kind byte.
pub(crate) fn foca(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + message.len());
    out.push(FOCA);
    out.extend_from_slice(message);
    out
}

/// A window of `entries`, as many as fit in one datagram, in order.
pub(crate) fn window(entries: impl IntoIterator<Item = Entry>) -> Vec<u8> {
    pack(
        WINDOW,
        entries.into_iter().map(|e| encoded(|out| e.encode(out))),
    )
    .into_iter()
    .next()
    .unwrap_or_else(|| vec![WINDOW, 0])
}

/// Asks for the profiles of `wants`, in as many datagrams as it takes.
pub(crate) fn want(wants: &[(NodeId, u16)]) -> Vec<Vec<u8>> {
    pack(
        WANT,
        wants.iter().map(|(node, tag)| {
            encoded(|out| {
                out.extend_from_slice(&node.get().to_be_bytes());
                out.extend_from_slice(&tag.to_be_bytes());
            })
        }),
    )
}

/// Sends `profiles`, in as many datagrams as it takes.
pub(crate) fn profiles(profiles: &[(Entry, Profile)]) -> Vec<Vec<u8>> {
    pack(
        PROFILES,
        profiles.iter().map(|(entry, profile)| {
            encoded(|out| {
                entry.encode(out);
                profile.encode(out);
            })
        }),
    )
}

fn encoded(write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut out);
    out
}

/// Items behind a kind byte and a count, as many a datagram as fit.
fn pack(kind: u8, items: impl Iterator<Item = Vec<u8>>) -> Vec<Vec<u8>> {
    let mut messages: Vec<Vec<u8>> = Vec::new();
    for item in items {
        let room = messages
            .last()
            .is_some_and(|m| m[1] < u8::MAX && m.len() + item.len() <= MAX_PLAIN);
        if !room {
            messages.push(vec![kind, 0]);
        }
        let message = messages.last_mut().expect("one was just pushed");
        message[1] += 1;
        message.extend_from_slice(&item);
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{AGE_UNIT, Figures};

    fn entry(n: u16) -> Entry {
        Entry {
            node: NodeId::new(n).unwrap(),
            age: AGE_UNIT * u32::from(n % 200),
            tag: n.wrapping_mul(7),
            figures: Figures {
                load: u32::from(n) * 100,
                ready: u32::from(n % 3),
                mem_free: 1 << 30,
                utilisation_pct: 50,
            },
        }
    }

    fn profile(n: u16) -> Profile {
        Profile {
            speed: 10_000,
            milli_cpus: 4000,
            mem_total: 8 << 30,
            compat: vec![n as u8; 32],
            ..Profile::default()
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let entries: Vec<Entry> = (1..=5).map(entry).collect();
        let window = window(entries.clone());
        assert_eq!(Message::decode(&window), Ok(Message::Window(entries)));
        let wants = vec![(NodeId::new(4).unwrap(), 9), (NodeId::new(5).unwrap(), 0)];
        assert_eq!(Message::decode(&want(&wants)[0]), Ok(Message::Want(wants)));
        let full: Vec<_> = (1..=3).map(|n| (entry(n), profile(n))).collect();
        assert_eq!(
            Message::decode(&profiles(&full)[0]),
            Ok(Message::Profiles(full))
        );
        assert_eq!(Message::decode(&foca(&[1, 2])), Ok(Message::Foca(&[1, 2])));
    }

    #[test]
    fn a_window_fills_one_datagram_and_long_answers_are_cut() {
        let window = window((1..=1000).map(entry));
        assert!(window.len() <= MAX_PLAIN);
        let Ok(Message::Window(taken)) = Message::decode(&window) else {
            panic!("not a window");
        };
        assert!(taken.len() > 100, "{} entries", taken.len());
        assert_eq!(
            taken[..],
            (1..=taken.len() as u16).map(entry).collect::<Vec<_>>()
        );
        let full: Vec<_> = (1..=300).map(|n| (entry(n), profile(n))).collect();
        let messages = profiles(&full);
        assert!(messages.len() > 1 && messages.iter().all(|m| m.len() <= MAX_PLAIN));
        let back: Vec<_> = messages
            .iter()
            .flat_map(|m| match Message::decode(m) {
                Ok(Message::Profiles(p)) => p,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(back, full);
        let wants: Vec<_> = (1..=600).map(|n| (NodeId::new(n).unwrap(), n)).collect();
        assert_eq!(want(&wants).len(), 3, "255 a message");
    }

    #[test]
    fn truncations_unknown_kinds_and_junk_are_refused() {
        let full = profiles(&[(entry(1), profile(1)), (entry(2), profile(2))]).remove(0);
        for len in 0..full.len() {
            assert!(Message::decode(&full[..len]).is_err(), "length {len}");
        }
        let mut long = full.clone();
        long.push(0);
        assert_eq!(Message::decode(&long), Err(EntryError::Trailing(1)));
        assert_eq!(Message::decode(&[9, 0]), Err(EntryError::Kind(9)));
        for len in 0..100 {
            for byte in [1u8, 2, 3] {
                let mut junk = vec![0xff; len];
                if let Some(first) = junk.first_mut() {
                    *first = byte;
                }
                let _ = Message::decode(&junk);
            }
        }
    }
}
