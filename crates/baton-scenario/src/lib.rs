//! # baton-scenario
//!
//! Scenario files: agents, simulated tools, a script of user inputs and
//! scripted model turns, and expectations, written in TOML and played by
//! the baton runtime.
