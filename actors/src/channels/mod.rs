//! Payment channels (MPP `session`): their state, shared by every instance
//! through the store ([`book`]).

pub mod book;

pub use book::{BookError, ChannelBook, Step};
