//! rmosix daemon room.
