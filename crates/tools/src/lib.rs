//! rmosix tools room.
