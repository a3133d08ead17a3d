//! The mutating API: register and end jobs over a unix socket, where the kernel tells us who is
//! calling (SO_PEERCRED) and the job table decides what they may change. Nothing here mutates
//! over TCP; the TCP server (`export::http`) is read-only.

pub mod client;
pub mod socket;
pub mod spool;

// The messages these send to the node thread are `crate::node::Message`.
