"""The service layer: one home for the run and skill operations the CLI, MCP and API call."""
