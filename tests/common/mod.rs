//! Test support: real `nats-server` processes on free ports, the [`TestBus`] fixture (server,
//! in-process worker, client), worker processes, and a request helper that understands error
//! replies. Every integration test file and the benches include it.
#![allow(dead_code)]

mod bus;
mod calls;
mod process;
mod server;
mod support;

#[allow(unused_imports)]
pub use bus::*;
#[allow(unused_imports)]
pub use calls::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use server::*;
#[allow(unused_imports)]
pub use support::*;
