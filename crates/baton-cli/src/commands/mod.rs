//! One module per subcommand.

pub mod mock_llm;
