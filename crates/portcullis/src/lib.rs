//! Portcullis: a security gateway for HTTP backends.
//!
//! This crate is everything that does IO: configuration loading, listeners and
//! connections ([`server`]), the reverse proxy ([`proxy`]), the built-in demo
//! upstream, event sinks and logging. The decisions live in
//! `portcullis-policy`; the tower layers that enforce them in
//! `portcullis-layers`. `main.rs` only parses the command line.

pub mod accounts;
pub mod admin;
pub mod alerts;
pub mod app;
pub mod audit;
pub mod auth;
pub mod check;
pub mod cli_apikey;
pub mod cli_audit;
pub mod cli_ban;
pub mod cli_user;
pub mod config;
pub mod demo;
pub mod events;
pub mod gateway;
pub mod http_client;
pub mod logging;
pub mod metrics;
pub mod oidc;
pub mod policy_cli;
pub mod proxy;
pub mod server;
pub mod shared;
pub mod store;
pub mod tls;
