"""The service layer: one home for run and skill operations (stats, feedback, pins, replay)
that the CLI, the MCP server and the future API call, so each rule is written once."""
