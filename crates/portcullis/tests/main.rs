//! The gateway's integration and end-to-end tests, one binary: each file
//! beside this one is a module, `common` is the shared harness (upstreams,
//! the gateway in-process or as the real binary, Redis, PostgreSQL, Node
//! apps, TLS) and `support` holds what the examples share with the tests.
//! One binary links the gateway once instead of once per file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

mod account_login;
mod accounts;
mod accounts_cli;
mod admin;
mod alerts;
mod ambiguous;
mod apikeys;
mod audit;
mod authz;
mod bans;
mod bypass;
mod config;
mod csrf;
mod dashboard;
mod docs;
mod faults;
mod headers;
mod hostile;
mod identity;
mod jwt;
mod login;
mod metrics;
mod oidc;
mod openapi;
mod pages;
mod paths;
mod process;
mod proxy;
mod rate_limit;
mod redis;
mod resources;
mod sinks;
mod soak;
mod tls;
mod waf;
mod waf_corpus;
