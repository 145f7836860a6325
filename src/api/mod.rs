//! Transports: thin adapters that translate between the wire and the core.

pub mod auth;
pub mod checked_stream;
pub mod convert;
pub mod grpc;
pub mod readiness;
pub mod rest;
pub mod status;
