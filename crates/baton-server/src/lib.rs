//! # baton-server
//!
//! baton as a service (being built).
