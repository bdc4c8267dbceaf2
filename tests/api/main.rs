//! One integration-test crate (one link, one binary): every test starts the
//! real server, in-process on random loopback ports or as the real binary,
//! with its own temporary SQLite file or its own database on a PostgreSQL
//! server the tests start, and talks to it over real HTTP.

mod admin;
mod clients;
mod clock_independence;
mod console;
mod durability;
mod faults;
mod gateway;
mod gateway_paths;
mod gateway_soundness;
mod helpers;
mod kg1;
mod limits;
mod multi_instance;
mod openapi;
mod operations;
mod policy;
mod postgres_server;
mod properties;
mod protocol;
mod raw_upstream;
mod rfc9421;
mod sdks;
mod soak;
mod upgrade;
mod vectors;
