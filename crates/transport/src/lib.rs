//! rmosix transport room.
