//! rmosix wire room.
