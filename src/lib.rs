//! comm: a serverless, delay-tolerant messenger on a Kademlia overlay over UDP.
//!
//! The crate is layered as described in DESIGN.md: [`wire`] turns bytes into
//! validated values, [`node::Node`] is the sans-IO protocol core, [`runtime`]
//! drives it with tokio and a UDP socket, [`repl`] is the user interface, and
//! [`sim`] drives many nodes on a virtual network for tests and benchmarks.
#![warn(missing_docs)]

pub mod address;
pub mod config;
pub mod identity;
pub mod lookup;
pub mod message;
pub mod node;
mod persist;
pub mod relay;
pub mod repl;
pub mod routing;
pub mod runtime;
pub mod sim;
pub mod store;
pub mod wire;

pub use address::Address;
pub use config::Config;
pub use identity::Identity;
pub use node::{Event, Node, Transmit};
