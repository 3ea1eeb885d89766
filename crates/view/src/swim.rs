//! What foca needs from us: the identity of a member ([`Id`]) and the encoding of its
//! messages ([`SwimCodec`]).
//!
//! foca's own messages, inside the sealed datagram (see `seal`), big endian:
//!
//! ```text
//! header:  src id (10) · src incarnation (2) · dst id (10) · message
//! id:      node (2) · generation (8)
//! message: tag (1), then
//!          0 Ping, 1 Ack:                      probe number (1)
//!          2 PingReq, 3 IndirectPing,
//!          4 IndirectAck, 5 ForwardedAck:      id (10) · probe number (1)
//!          6 Announce, 7 Feed, 8 Gossip,
//!          9 Broadcast, 10 TurnUndead:         nothing
//! member:  id (10) · incarnation (2) · state (1: 0 alive, 1 suspect, 2 down)
//! ```
//!
//! foca writes the member count and the custom broadcasts (our entries, see `state`)
//! around these itself.

use bytes::{Buf, BufMut};
use foca::{Header, Member, Message, State};

use rmosix_config::NodeId;

/// Bytes of an encoded [`Id`].
const ID_LEN: usize = 10;

/// A member as foca knows it: a node of the map and the run of its daemon.
///
/// foca declares a member down for good; a node that comes back (a restarted daemon, or one
/// declared down while it was only slow) does so under a newer generation, which wins over
/// the old identity at the same node ([`foca::Identity::win_addr_conflict`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Id {
    pub node: NodeId,
    pub generation: u64,
}

impl foca::Identity for Id {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(Id {
            node: self.node,
            generation: self.generation.checked_add(1)?,
        })
    }

    fn addr(&self) -> NodeId {
        self.node
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// Why foca's bytes could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("message ends early")]
    Short,
    #[error("node 0 named")]
    NodeZero,
    #[error("unknown message tag {0}")]
    Tag(u8),
    #[error("unknown member state {0}")]
    State(u8),
    #[error("no room left in the datagram")]
    Full,
}

/// foca's messages in the layout above.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct SwimCodec;

fn put_id(buf: &mut impl BufMut, id: &Id) {
    buf.put_u16(id.node.get());
    buf.put_u64(id.generation);
}

fn get_id(buf: &mut impl Buf) -> Result<Id, CodecError> {
    if buf.remaining() < ID_LEN {
        return Err(CodecError::Short);
    }
    let node = NodeId::new(buf.get_u16()).ok_or(CodecError::NodeZero)?;
    Ok(Id {
        node,
        generation: buf.get_u64(),
    })
}

fn get_u8(buf: &mut impl Buf) -> Result<u8, CodecError> {
    buf.has_remaining()
        .then(|| buf.get_u8())
        .ok_or(CodecError::Short)
}

impl foca::Codec<Id> for SwimCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<Id>,
        mut buf: impl BufMut,
    ) -> Result<(), CodecError> {
        // The largest header: two ids, incarnation, tag, an id and a probe number.
        if buf.remaining_mut() < 3 * ID_LEN + 4 {
            return Err(CodecError::Full);
        }
        put_id(&mut buf, &header.src);
        buf.put_u16(header.src_incarnation);
        put_id(&mut buf, &header.dst);
        let (tag, id, probe) = match &header.message {
            Message::Ping(n) => (0, None, Some(*n)),
            Message::Ack(n) => (1, None, Some(*n)),
            Message::PingReq {
                target,
                probe_number,
            } => (2, Some(target), Some(*probe_number)),
            Message::IndirectPing {
                origin,
                probe_number,
            } => (3, Some(origin), Some(*probe_number)),
            Message::IndirectAck {
                target,
                probe_number,
            } => (4, Some(target), Some(*probe_number)),
            Message::ForwardedAck {
                origin,
                probe_number,
            } => (5, Some(origin), Some(*probe_number)),
            Message::Announce => (6, None, None),
            Message::Feed => (7, None, None),
            Message::Gossip => (8, None, None),
            Message::Broadcast => (9, None, None),
            Message::TurnUndead => (10, None, None),
        };
        buf.put_u8(tag);
        if let Some(id) = id {
            put_id(&mut buf, id);
        }
        if let Some(probe) = probe {
            buf.put_u8(probe);
        }
        Ok(())
    }

    fn decode_header(&mut self, mut buf: impl Buf) -> Result<Header<Id>, CodecError> {
        let src = get_id(&mut buf)?;
        if buf.remaining() < 2 {
            return Err(CodecError::Short);
        }
        let src_incarnation = buf.get_u16();
        let dst = get_id(&mut buf)?;
        let message = match get_u8(&mut buf)? {
            0 => Message::Ping(get_u8(&mut buf)?),
            1 => Message::Ack(get_u8(&mut buf)?),
            tag @ 2..=5 => {
                let id = get_id(&mut buf)?;
                let probe_number = get_u8(&mut buf)?;
                match tag {
                    2 => Message::PingReq {
                        target: id,
                        probe_number,
                    },
                    3 => Message::IndirectPing {
                        origin: id,
                        probe_number,
                    },
                    4 => Message::IndirectAck {
                        target: id,
                        probe_number,
                    },
                    _ => Message::ForwardedAck {
                        origin: id,
                        probe_number,
                    },
                }
            }
            6 => Message::Announce,
            7 => Message::Feed,
            8 => Message::Gossip,
            9 => Message::Broadcast,
            10 => Message::TurnUndead,
            tag => return Err(CodecError::Tag(tag)),
        };
        Ok(Header {
            src,
            src_incarnation,
            dst,
            message,
        })
    }

    fn encode_member(
        &mut self,
        member: &Member<Id>,
        mut buf: impl BufMut,
    ) -> Result<(), CodecError> {
        // foca asks that a member that does not fit leaves the buffer untouched.
        if buf.remaining_mut() < ID_LEN + 3 {
            return Err(CodecError::Full);
        }
        put_id(&mut buf, member.id());
        buf.put_u16(member.incarnation());
        buf.put_u8(match member.state() {
            State::Alive => 0,
            State::Suspect => 1,
            State::Down => 2,
        });
        Ok(())
    }

    fn decode_member(&mut self, mut buf: impl Buf) -> Result<Member<Id>, CodecError> {
        let id = get_id(&mut buf)?;
        if buf.remaining() < 3 {
            return Err(CodecError::Short);
        }
        let incarnation = buf.get_u16();
        let state = match buf.get_u8() {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Down,
            other => return Err(CodecError::State(other)),
        };
        Ok(Member::new(id, incarnation, state))
    }
}

#[cfg(test)]
mod tests {
    use foca::Codec;

    use super::*;

    fn id(node: u16, generation: u64) -> Id {
        Id {
            node: NodeId::new(node).unwrap(),
            generation,
        }
    }

    fn every_message() -> Vec<Message<Id>> {
        let other = id(9, 99);
        vec![
            Message::Ping(1),
            Message::Ack(2),
            Message::PingReq {
                target: other,
                probe_number: 3,
            },
            Message::IndirectPing {
                origin: other,
                probe_number: 4,
            },
            Message::IndirectAck {
                target: other,
                probe_number: 5,
            },
            Message::ForwardedAck {
                origin: other,
                probe_number: 6,
            },
            Message::Announce,
            Message::Feed,
            Message::Gossip,
            Message::Broadcast,
            Message::TurnUndead,
        ]
    }

    #[test]
    fn headers_round_trip_and_truncations_fail() {
        for message in every_message() {
            let header = Header {
                src: id(1, 10),
                src_incarnation: 7,
                dst: id(2, u64::MAX),
                message,
            };
            let mut bytes = Vec::new();
            SwimCodec.encode_header(&header, &mut bytes).unwrap();
            assert_eq!(SwimCodec.decode_header(&bytes[..]).unwrap(), header);
            for len in 0..bytes.len() {
                assert!(SwimCodec.decode_header(&bytes[..len]).is_err());
            }
        }
    }

    #[test]
    fn members_round_trip_and_bad_states_fail() {
        for state in [State::Alive, State::Suspect, State::Down] {
            let member = Member::new(id(5, 1), 3, state);
            let mut bytes = Vec::new();
            SwimCodec.encode_member(&member, &mut bytes).unwrap();
            assert_eq!(SwimCodec.decode_member(&bytes[..]).unwrap(), member);
            for len in 0..bytes.len() {
                assert!(SwimCodec.decode_member(&bytes[..len]).is_err());
            }
            let mut bad = bytes.clone();
            *bad.last_mut().unwrap() = 3;
            assert_eq!(SwimCodec.decode_member(&bad[..]), Err(CodecError::State(3)));
        }
    }

    #[test]
    fn a_member_that_does_not_fit_leaves_the_buffer_untouched() {
        let mut room = [0u8; ID_LEN + 2];
        let mut buf = &mut room[..];
        assert_eq!(
            SwimCodec.encode_member(&Member::alive(id(1, 1)), &mut buf),
            Err(CodecError::Full)
        );
        assert_eq!(room, [0; ID_LEN + 2]);
    }

    #[test]
    fn node_zero_and_unknown_tags_are_refused() {
        let mut bytes = Vec::new();
        let header = Header {
            src: id(1, 1),
            src_incarnation: 0,
            dst: id(2, 2),
            message: Message::Gossip,
        };
        SwimCodec.encode_header(&header, &mut bytes).unwrap();
        let mut zero = bytes.clone();
        zero[..2].fill(0);
        assert_eq!(
            SwimCodec.decode_header(&zero[..]),
            Err(CodecError::NodeZero)
        );
        let mut tag = bytes.clone();
        *tag.last_mut().unwrap() = 11;
        assert_eq!(SwimCodec.decode_header(&tag[..]), Err(CodecError::Tag(11)));
    }

    #[test]
    fn a_newer_generation_wins() {
        use foca::Identity;
        assert!(id(1, 2).win_addr_conflict(&id(1, 1)));
        assert!(!id(1, 1).win_addr_conflict(&id(1, 2)));
        assert_eq!(id(1, 1).renew(), Some(id(1, 2)));
        assert_eq!(id(1, u64::MAX).renew(), None);
    }
}
