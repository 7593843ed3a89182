//! One module per subcommand.

pub mod log;
pub mod mock_llm;
pub mod workers;
