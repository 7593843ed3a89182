//! # baton-testkit
//!
//! Tools for testing baton orchestrations.
//!
//! * [`tree_run`]: [`TreeRun`] plays a conversation (a delegation tree) on
//!   the scripted model and tokio's paused clock, then lets a test assert on
//!   the tree's shape and statuses, the answer, the events and the virtual
//!   time it took. The order in which concurrent completions arrive is set
//!   by the script's virtual latencies, so races are reproducible.

pub mod tree_run;

pub use tree_run::{TreeAssert, TreeRun};
