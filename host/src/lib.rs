//! The deploy host: loads sandboxed WebAssembly stack plugins and drives each through one
//! lifecycle (lock, preflight, approval, backup, deploy, verify, validate; rollback on failure).
//!
//! Data flows one way: `cli -> config -> lifecycle -> runtime -> plugin -> capabilities`, and
//! every step is an event on one bus (`events`) that the renderers and the store subscribe to.

pub mod capabilities;
pub mod ci;
pub mod cli;
pub mod config;
pub mod events;
pub mod lifecycle;
pub mod notify;
pub mod runtime;
pub mod state;
pub mod trust;
