//! comm: a serverless, delay-tolerant messenger on a Kademlia overlay over UDP.
//!
//! The crate is layered as described in DESIGN.md: [`wire`] turns bytes into
//! validated values (datagrams and stored records), [`node::Node`] is the
//! sans-IO protocol core coordinating the [`routing`] table, [`lookup`]s and
//! the [`relay`], [`runtime`] drives it with tokio, a UDP socket and a
//! [`store`], [`repl`] is the user interface speaking the [`control`]
//! vocabulary, and [`sim`] drives many nodes on a virtual network for tests
//! and benchmarks.
#![warn(missing_docs)]

pub mod address;
pub mod book;
pub mod chatlog;
pub mod config;
pub mod control;
pub mod crypto;
pub mod drops;
pub mod event;
pub mod identity;
pub mod limits;
pub mod lookup;
pub mod message;
pub mod node;
pub mod records;
pub mod relay;
pub mod repl;
pub mod routing;
pub mod runtime;
pub mod signing;
pub mod sim;
pub mod store;
pub mod wire;

pub use address::Address;
pub use config::Config;
pub use event::Event;
pub use identity::Identity;
pub use node::{Node, Transmit};
