//! rmosix image room.
