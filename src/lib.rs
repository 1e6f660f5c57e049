pub mod api;
pub mod client;
pub mod config;
pub mod core;
pub mod hooks;
pub mod net;
pub mod node;
pub mod wire;
