//! rmosix lab room.
