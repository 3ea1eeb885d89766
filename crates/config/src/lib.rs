//! rmosix config room.
